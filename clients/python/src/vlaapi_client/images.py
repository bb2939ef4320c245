"""Camera images in any usual form -> the base64 PNG/JPEG strings the service takes."""
from __future__ import annotations

import base64
import io
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
    if isinstance(images, dict):
        return {"images": {str(cam): encode(img) for cam, img in images.items()}}
    return {"image": encode(images)}
