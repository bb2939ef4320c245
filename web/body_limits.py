"""How many body bytes each route may read, enforced before the first byte is read.

Werkzeug wraps the WSGI input lazily (`request.stream`), so a limit set here, before any view or the input
guard touches the body, is checked against `Content-Length` at once and, for a chunked body, while streaming
(werkzeug's LimitedStream raises 413 past it; gunicorn sets `wsgi.input_terminated`). Most routes take
nothing but a small JSON object; only the inference bodies (base64 images, or json-numpy arrays on the OpenVLA
door) and replay uploads are large. A route that did not match reads nothing: its 404/405 needs no body.
"""
from __future__ import annotations

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from workers.settings import Settings

SMALL_BODY = 64 * 1024  # the largest non-inference JSON body (a replay spec, a robot_config) is a few KB
MAX_CAMERAS = 3  # the most cameras any served model takes (pi0: base, left wrist, right wrist)
# Routes whose bodies carry images: base64 text in JSON, or json-numpy's base64 arrays on the OpenVLA door.
INFERENCE_ENDPOINTS = frozenset({"jobs.Jobs", "inference.Inference", "openvla_compat.act_default",
                                 "openvla_compat.act_model"})
UPLOAD_ENDPOINTS = frozenset({"replays.Replays"})  # a multipart dataset: the app's MAX_CONTENT_LENGTH


def inference_limit(settings: Settings) -> int:
    """Every camera at MAX_IMAGE_BYTES, as base64, plus the rest of the request."""
    return MAX_CAMERAS * (settings.max_image_bytes * 4 // 3 + 4) + SMALL_BODY


def limit_for(endpoint: str | None, method: str) -> int:
    if endpoint is None or method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return 0 if endpoint is None else SMALL_BODY
    if endpoint in INFERENCE_ENDPOINTS:
        return inference_limit(current_app.config["SETTINGS"])
    if endpoint in UPLOAD_ENDPOINTS:
        return int(current_app.config["MAX_CONTENT_LENGTH"])
    return SMALL_BODY


def apply() -> None:
    """Set this request's limit; 413 now when Content-Length already says the body is over it. A request
    whose route did not match gets limit 0 but no 413: it is answered 404/405 without its body being read."""
    limit = limit_for(request.endpoint if request.routing_exception is None else None, request.method)
    request.max_content_length = limit
    length = request.content_length
    if request.routing_exception is None and length is not None and length > limit:
        raise RequestEntityTooLarge(f"the body is {length} bytes; {request.method} {request.path} takes at most "
                                    f"{limit} bytes")
