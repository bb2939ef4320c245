"""Decode still images (PNG/JPEG bytes or files) into HxWx3 uint8 arrays.

Only PNG and JPEG are accepted: they are what LeRobot's image features and our own format store, and a
short allow-list keeps untrusted uploads away from Pillow's rarer (and historically buggier) decoders.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from workers.replays.errors import DatasetError, reason

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Refuse before decoding anything larger than this (a decompression bomb in an upload).
MAX_PIXELS = 4096 * 4096
_OTHER_MAGIC = {b"RIFF": "WebP", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def sniff_encoding(data: bytes) -> str:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    for magic, name in _OTHER_MAGIC.items():
        if data.startswith(magic):
            return name
    return "unknown"


def decode_image_bytes(data: bytes | None, where: str) -> np.ndarray:
    if not data:
        raise DatasetError(where, "image bytes are missing or empty")
    encoding = sniff_encoding(bytes(data[:8]))
    if encoding not in ("png", "jpeg"):
        raise DatasetError(where, f"unsupported image encoding {encoding}; only PNG and JPEG are supported")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DatasetError(where, f"image of {img.width}x{img.height} pixels is too large")
            img.load()  # raises on truncated data, which Image.open alone would not notice
            return _to_rgb(img, where)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(where, f"corrupt or truncated {encoding.upper()} image ({exc})") from None


def decode_image_file(path: Path, where: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(where, f"image file not found: {path.name}") from None
    except OSError as exc:
        raise DatasetError(where, f"cannot read image file {path.name}: {reason(exc, path)}") from None
    return decode_image_bytes(data, where)


def _to_rgb(img: Image.Image, where: str) -> np.ndarray:
    # Grey, palette and alpha images are common in hand-made datasets; 16-bit and CMYK ones are not
    # camera frames a VLA was trained on, so they are refused rather than silently rescaled.
    if img.mode not in ("RGB", "RGBA", "L", "P", "LA"):
        raise DatasetError(where, f"unsupported image mode {img.mode}; expected 8-bit RGB")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()
