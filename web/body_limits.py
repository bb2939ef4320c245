"""How many body bytes each route may read, enforced before the first byte is read.

Werkzeug wraps the WSGI input lazily (`request.stream`), so a limit set here, before any view or the input
guard touches the body, is checked against `Content-Length` at once and, for a chunked body, while streaming
(CappedInput; gunicorn sets `wsgi.input_terminated` for those). Most routes take
nothing but a small JSON object; only the inference bodies (base64 images, or json-numpy arrays on the OpenVLA
door) and replay uploads are large. A route that did not match reads nothing: its 404/405 needs no body.
"""
from __future__ import annotations

import io
from typing import IO

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from workers.settings import Settings

SMALL_BODY = 64 * 1024  # the largest non-inference JSON body (a replay spec, a robot_config) is a few KB
MAX_CAMERAS = 3  # the most cameras any served model takes (pi0: base, left wrist, right wrist)
# Routes whose bodies carry images: base64 text in JSON, raw arrays or image bytes in msgpack (the same limit),
# or json-numpy's base64 arrays on the OpenVLA door.
INFERENCE_ENDPOINTS = frozenset({"jobs.Jobs", "inference.Inference", "openvla_compat.act_default",
                                 "openvla_compat.act_model"})
UPLOAD_ENDPOINTS = frozenset({"replays.Replays"})  # a multipart dataset: the app's MAX_CONTENT_LENGTH


def image_base64_len(settings: Settings) -> int:
    """The longest base64 text of one image: MAX_IMAGE_BYTES, encoded (4 characters per 3 bytes, padded)."""
    return settings.max_image_bytes * 4 // 3 + 4


def inference_limit(settings: Settings) -> int:
    """Every camera at MAX_IMAGE_BYTES, as base64, plus the rest of the request."""
    return MAX_CAMERAS * image_base64_len(settings) + SMALL_BODY


def limit_for(endpoint: str | None, method: str) -> int:
    if endpoint is None or method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return 0 if endpoint is None else SMALL_BODY
    if endpoint in INFERENCE_ENDPOINTS:
        return inference_limit(current_app.config["SETTINGS"])
    if endpoint in UPLOAD_ENDPOINTS:
        return int(current_app.config["MAX_CONTENT_LENGTH"])
    return SMALL_BODY


class CappedInput(io.RawIOBase):
    """A chunked body's WSGI input that answers 413 on the first byte past the limit. (Werkzeug's own limit
    on a stream ends the read at the limit without an error: the body would be silently truncated.)"""

    def __init__(self, stream: IO[bytes], limit: int):
        self._stream, self._limit, self._pos = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._stream.read(min(len(buffer), self._limit + 1 - self._pos))
        self._pos += len(data)
        if self._pos > self._limit:
            raise RequestEntityTooLarge(f"the body is larger than {self._limit} bytes, what this route takes")
        buffer[:len(data)] = data
        return len(data)


def apply() -> None:
    """Set this request's limit; 413 now when Content-Length already says the body is over it, and while
    streaming when a chunked body goes past it. A request whose route did not match gets limit 0 but no 413:
    it is answered 404/405 without its body being read."""
    limit = limit_for(request.endpoint if request.routing_exception is None else None, request.method)
    request.max_content_length = limit
    length = request.content_length
    if request.routing_exception is None and length is not None and length > limit:
        raise RequestEntityTooLarge(f"the body is {length} bytes; {request.method} {request.path} takes at most "
                                    f"{limit} bytes")
    if length is None and request.environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream
        request.environ["wsgi.input"] = CappedInput(request.environ["wsgi.input"], limit)
        request.max_content_length = limit + 1  # werkzeug then asks for the byte that CappedInput refuses
