"""msgpack request bodies for POST /v1/inference and POST /v1/jobs (issue 26: images cross the service once, as
they came). The document is the JSON body's, checked by the same schema; a camera image (`image`, or a value of
`images`) may also be a raw array, msgpack-numpy as openpi writes it ({"__ndarray__": true, "data": bin,
"dtype": str, "shape": [...]}), or the encoded PNG/JPEG bytes themselves (msgpack bin). A robot then sends its
camera arrays without encoding them, and their bytes are stored beside the job's message as they came.

Read like any body, and more cautiously: the route's byte limit applies before anything is read
(web/body_limits.py), and the caller's limits are looked at before the body is read at all (429 unread, as on
the compatibility doors). The decoder is openpi's (web/compat/openpi/codec.py): no ext types (nothing is ever
unpickled or constructed but maps, lists, numbers, strings, bytes and numeric arrays), every length prefix and
the number of values bounded, trailing bytes refused. Then the input guard's walk (depth, values, strings,
numbers); arrays outside images become lists, as the JSON body has them; and each image array becomes a
PendingImage, checked now for dtype, shape and pixel count and laid out as a RawImage only after admission has
charged the request (web/services/deferred.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flask import Request, current_app, request
from webargs.flaskparser import is_json_request

from web import body_limits, input_guard
from web.compat.arrays import ArrayError, pending_image
from web.compat.openpi import codec
from web.compat.openpi.limits import FrameBudget
from web.errors import ApiError
from web.services import admission
from web.services.raw_images import RAW_FACTOR
from workers.settings import Settings

MEDIA_TYPES = ("application/msgpack", "application/x-msgpack")
LOCATION = "json_or_msgpack"  # the webargs location of a body given in either form (BodyParser)
ARRAY_MAP = "{'__ndarray__': true, 'data': bin, 'dtype': str, 'shape': [int, ...]}"


def budget(settings: Settings) -> FrameBudget:
    """msgpack's limits for one body: the route's byte limit; one bin at most a raw image's bytes (RawImage's
    cap), one string at most a base64 image; maps, arrays and their values within the input guard's count."""
    frame = body_limits.inference_limit(settings)
    n = input_guard.MAX_ELEMENTS
    return FrameBudget(frame_bytes=frame, bin_bytes=min(settings.max_image_bytes * RAW_FACTOR, frame),
                       str_len=min(body_limits.image_base64_len(settings), frame), array_len=n, map_len=n,
                       containers=n, values=n)


def load() -> dict[str, Any]:
    """This request's msgpack body as the schema's input: plain values, and images as PendingImage, bytes or
    base64 text. Every refusal is a problem document: 400 not msgpack, 413 a value over its size, 422 else."""
    admission.refuse_if_over_limit()  # before a byte is read: a customer over its limits costs no decoding
    limits = budget(current_app.config["SETTINGS"])
    try:
        body = codec.unpackb(request.get_data(cache=False), limits)
    except codec.MessageError as exc:
        raise _refusal(exc, limits) from None
    except ArrayError as exc:
        raise ApiError(422, "invalid_array", f"{exc}; an array is {ARRAY_MAP} with a numeric dtype") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", f"a msgpack body is a map (the JSON body's object), not a "
                       f"{type(body).__name__}")
    input_guard.check_value(body)  # depth, values, strings, numbers (arrays and bytes are leaves to it)
    return {key: _top(key, value) for key, value in _items(body, ()).items()}


def _refusal(exc: codec.MessageError, limits: FrameBudget) -> ApiError:
    """A message msgpack could not read within the budget: what it went past, in the JSON body's terms."""
    if exc.limit in ("bin", "str", "frame"):
        return ApiError(413, "body_too_large", f"a value in the msgpack body is longer than it may be: binary data "
                        f"(an image) at most {limits.bin_bytes} bytes, a string at most {limits.str_len} characters")
    if exc.limit in ("array", "map", "values", "containers"):
        return ApiError(422, "too_many_elements", f"more than {input_guard.MAX_ELEMENTS} values in one body")
    if exc.limit == "ext":
        return ApiError(400, "invalid_msgpack", "msgpack extension types (timestamps, ...) are not accepted")
    return ApiError(400, "invalid_msgpack", "the body is not one complete msgpack object (malformed, truncated, "
                    "invalid UTF-8 in a string, or bytes after its end)")


def _top(key: str, value: Any) -> Any:
    if key == "image":
        return _image(value, "image")
    if key == "images" and isinstance(value, dict):
        return {cam: _image(img, f"images.{cam}") for cam, img in _items(value, ("images",)).items()}
    return _plain(value, (key,))


def _image(value: Any, field: str) -> Any:
    """An array: checked for what is cheap now, laid out after the charge. Bytes (an encoded image) and base64
    text stay as they are: submit reads their headers after the charge, as for JSON bodies."""
    return pending_image(value, field) if isinstance(value, np.ndarray) else value


def _plain(value: Any, path: tuple[Any, ...]) -> Any:
    """Anything but an image as the JSON body would have it. Recursion is bounded: check_value refused any body
    nested deeper than input_guard.MAX_DEPTH."""
    if isinstance(value, dict):
        return {k: _plain(v, (*path, k)) for k, v in _items(value, path).items()}
    if isinstance(value, list):
        return [_plain(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, np.ndarray | np.generic):  # a state or prev_actions sent as an array: numbers, checked
        if value.size > input_guard.MAX_ELEMENTS:
            raise ApiError(422, "too_many_elements", f"more than {input_guard.MAX_ELEMENTS} values in one array",
                           field=_field(path))
        plain = value.tolist()
        input_guard.check_value(plain, _field(path))
        return plain
    if isinstance(value, bytes):
        raise ApiError(422, "invalid_value", "binary data (msgpack bin) is taken only as an image", field=_field(path))
    return value


def _items(mapping: dict[Any, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """A map whose keys are all text, as in JSON (msgpack also allows numbers, bytes, ...)."""
    for key in mapping:
        if not isinstance(key, str):
            raise ApiError(422, "invalid_key", f"map keys must be strings, not {type(key).__name__}",
                           field=_field(path))
    return mapping


def _field(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path))[:200] or "body"  # the keys are the client's: bounded, as the guard bounds them


def is_msgpack(req: Request) -> bool:
    return req.mimetype in MEDIA_TYPES


class BodyParser(input_guard.GuardedParser):
    """The input guard's parser, plus the LOCATION body: JSON (parsed once by the guard), msgpack (load()), or
    a 415 for any other media type. A request with no body and no type reads as JSON's `missing` (a 422 that
    names the required fields)."""

    __location_map__ = {**input_guard.GuardedParser.__location_map__, LOCATION: "load_json_or_msgpack"}
    DEFAULT_UNKNOWN_BY_LOCATION = {**input_guard.GuardedParser.DEFAULT_UNKNOWN_BY_LOCATION, LOCATION: None}

    def load_json_or_msgpack(self, req: Request, schema: Any) -> Any:
        if is_msgpack(req):
            return load()
        if is_json_request(req) or not (req.mimetype or req.content_length):
            return self.load_json(req, schema)
        raise ApiError(415, "unsupported_media_type", f"this route takes application/json or application/msgpack "
                       f"bodies, not {req.mimetype[:100]!r}", headers={"Accept-Post": ", ".join(
                           ("application/json", *MEDIA_TYPES))})

