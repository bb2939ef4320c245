"""Camera images in any usual form -> what the service takes: base64 PNG/JPEG strings in a JSON body, or in a
msgpack body the arrays themselves (msgpack-numpy, as openpi packs them) and encoded files' bytes as they are."""
from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

ImageLike = Union[np.ndarray, Image.Image, bytes, str, Path]


def encode(image: ImageLike) -> str:
    """An (H, W, 3) uint8 array or PIL image is sent as PNG (lossless: the policy sees exactly these pixels);
    bytes are taken as an already encoded PNG/JPEG; a str or Path names an image file."""
    if isinstance(image, (str, Path)):
        return base64.b64encode(Path(image).read_bytes()).decode()
    if isinstance(image, (bytes, bytearray)):
        return base64.b64encode(bytes(image)).decode()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8 (H, W, 3), not {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"cannot send {type(image).__name__} as an image")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


def encode_images(images: Any) -> dict[str, Any]:
    """One image -> {"image": ...}; a mapping of camera name to image -> {"images": {...}}."""
    return _by_camera(images, encode)


def raw(image: ImageLike) -> Any:
    """For a msgpack body: a uint8 (H, W, 3) array as itself (packed as msgpack-numpy, vlaapi_client.wire; the
    service stores its bytes as they came, no PNG on either side), a PIL image as its RGB array, an encoded file's
    bytes as they are."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"cannot send {type(image).__name__} as an image")
    if image.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 (H, W, 3), not {image.dtype}")
    return image


def raw_images(images: Any) -> dict[str, Any]:
    """encode_images for a msgpack body."""
    return _by_camera(images, raw)


def _by_camera(images: Any, one: Callable[[Any], Any]) -> dict[str, Any]:
    """The body's image field: {"images": {camera: ...}} for a dict of cameras, else {"image": ...}."""
    if isinstance(images, dict):
        return {"images": {str(cam): one(img) for cam, img in images.items()}}
    return {"image": one(images)}
