"""What a camera image in a job message may be, checked by the web from its header and structure alone.

The web never decodes pixels (the GPU worker does, once, in workers/gpu/decode.py); it reads the format
and size from the header, lets Pillow verify the file's structure (PNG chunk CRCs), and checks that JPEG
and WebP files are complete. So a non-image, a truncated file or an oversized canvas is a 4xx before
anything is stored, for the cost of reading the header. Only PNG, JPEG and WebP are accepted anywhere:
Pillow can open formats whose decoders run external programs (EPS runs Ghostscript).
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP")
# Decompression bombs: a 4 MB PNG can claim a 100k x 100k canvas.
MAX_PIXELS = 4096 * 4096


class ImageRejected(ValueError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect(raw: bytes) -> ImageInfo:
    """Format and size from the header, structure verified, no pixels decoded; ImageRejected otherwise."""
    try:
        with Image.open(io.BytesIO(raw), formats=FORMATS) as img:
            info = ImageInfo(img.format or "", int(img.width), int(img.height))
            check_size(info.width, info.height)
            img.verify()
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError):
        raise ImageRejected("bytes are not a complete PNG, JPEG or WebP image") from None
    if not _complete(info.format, raw):
        raise ImageRejected(f"the {info.format} image is truncated")
    return info


def check_size(width: int, height: int) -> None:
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ImageRejected(f"image is {width}x{height}; at most {MAX_PIXELS} pixels")


def _complete(fmt: str, raw: bytes) -> bool:
    if fmt == "JPEG":  # ends at its End Of Image marker (some encoders pad a few bytes after it)
        return b"\xff\xd9" in raw[-64:]
    if fmt == "WEBP":  # the RIFF header states the file's length
        return len(raw) >= 12 and struct.unpack_from("<I", raw, 4)[0] + 8 <= len(raw)
    return True  # PNG: verify() has walked every chunk and checked its CRC
