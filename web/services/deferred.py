"""Image work deferred until the request has been charged, for the doors that receive images as arrays.

A JSON body's images are encoded, and only their headers are read, after admission (admission.py). The
compatibility doors (OpenVLA's `/act`, openpi's websocket) and REST's msgpack bodies receive raw arrays that
must be laid out first, which for a large image costs CPU. So an adapter checks what is cheap (dtype, shape, pixel
count) and puts a PendingImage in the body instead of the converted image; the body goes through the same
schema (whose ImageField takes a PendingImage as it is) and the same admission, and the image is converted in
submit.prepare, inside admission's create step: after the rate limit, quota, queue depth and in-flight count,
with the unit refunded if the conversion refuses the image. A customer over its limits gets its 429 before any
image work, on every door. (The OpenVLA door and REST's msgpack bodies also look at the limits before reading
the body at all: web/compat/openvla.py, web/msgpack_body.py.)

How an array becomes what crosses Redis is the adapter's `convert` callable (web/compat/arrays.py): one place.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any


class PendingImage:
    """An image array already checked for shape and size, converted only when resolve() is called."""

    __slots__ = ("_convert", "_digest", "field")

    def __init__(self, convert: Callable[[], Any], field: str, digest: Callable[[], str]):
        self._convert, self._digest, self.field = convert, digest, field

    def resolve(self) -> Any:
        return self._convert()

    def digest(self) -> str:
        """A stable digest of the image as received, so an Idempotency-Key compares bodies without converting."""
        return self._digest()


def json_default(value: Any) -> str:
    """json.dumps(default=...) for bodies that may hold pending images or an encoded image's bytes (msgpack
    bodies): the request hash."""
    if isinstance(value, PendingImage):
        return f"pending-image:{value.digest()}"
    if isinstance(value, bytes):
        return f"bytes:{hashlib.sha256(value).hexdigest()}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def resolve_images(images: dict[str, Any]) -> dict[str, Any]:
    """Images by camera: pending ones converted now (to a RawImage, web/services/raw_images.py; call only
    after admission has counted), encoded ones (base64 text, or msgpack's bytes) as they are."""
    return {cam: value.resolve() if isinstance(value, PendingImage) else value for cam, value in images.items()}

