"""Image work deferred until the request has been charged, for the doors that receive images as arrays.

`POST /v1/inference` receives encoded images and only reads their headers after admission (admission.py). The
compatibility doors (OpenVLA's `/act`, openpi's websocket) receive raw arrays that must be converted first,
and converting a large image costs seconds of CPU. So an adapter checks what is cheap (dtype, shape, pixel
count) and puts a PendingImage in the body instead of the converted image; the body goes through the same
schema (load_request, with a placeholder in the image's place) and the same admission, and the image is
converted in submit.prepare, inside admission's create step: after the rate limit, quota, queue depth and
in-flight count, with the unit refunded if the conversion refuses the image. A customer over its limits gets
its 429 before any image work, on every door. (The OpenVLA door also looks at the limits before reading its
body at all: web/compat/openvla.py.)

How an array becomes what crosses Redis is the adapter's `convert` callable (web/compat/arrays.py): one place.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

PLACEHOLDER = "pending"  # a non-empty string where the schema expects an encoded image; never stored


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
    """json.dumps(default=...) for bodies that may hold pending images (the request hash)."""
    if isinstance(value, PendingImage):
        return f"pending-image:{value.digest()}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def split(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str | None, PendingImage]]:
    """The body with placeholders for its pending images (for schema validation), and the pending images by
    camera (None for the single `image` field)."""
    pending: dict[str | None, PendingImage] = {}
    shadow = dict(body)
    if isinstance(body.get("image"), PendingImage):
        pending[None] = body["image"]
        shadow["image"] = PLACEHOLDER
    if isinstance(body.get("images"), dict):
        shadow["images"] = dict(body["images"])
        for cam, value in body["images"].items():
            if isinstance(value, PendingImage):
                pending[cam] = value
                shadow["images"][cam] = PLACEHOLDER
    return shadow, pending


def rejoin(data: dict[str, Any], pending: dict[str | None, PendingImage]) -> dict[str, Any]:
    """Put the pending images back into the validated request."""
    for cam, image in pending.items():
        if cam is None:
            data["image"] = image
        else:
            data["images"][cam] = image
    return data


def resolve_images(images: dict[str, Any]) -> dict[str, Any]:
    """Images by camera: pending ones converted now (to a RawImage, web/services/raw_images.py; call only
    after admission has counted), encoded ones (base64 strings) as they are."""
    return {cam: value.resolve() if isinstance(value, PendingImage) else value for cam, value in images.items()}

