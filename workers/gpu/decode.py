"""The JSON job payload a GPU worker receives, and its conversion into a policy Observation.

This is the one place a job's images are decoded to pixels (the web only inspects headers). Images travel
base64-encoded inside the task message: the broker keeps the message until the task is acknowledged, so a
redelivered job still has its images (nothing is lost when a worker dies).
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError
from workers.wire.images import FORMATS, ImageRejected, check_size


def decode_image(field: str, b64: str) -> np.ndarray:
    """base64 PNG/JPEG/WebP -> HxWx3 uint8 RGB. Raises PolicyInputError naming the field."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PolicyInputError(field, "not valid base64") from exc
    return decode_image_bytes(field, raw)


def decode_image_bytes(field: str, raw: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw), formats=FORMATS) as img:
            check_size(img.width, img.height)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ImageRejected as exc:
        raise PolicyInputError(field, exc.message) from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise PolicyInputError(field, "bytes are not a decodable image (PNG, JPEG or WebP)") from exc


def to_observation(job: dict) -> Observation:
    images = {cam: decode_image(f"images.{cam}", b64) for cam, b64 in job["images"].items()}
    state = job.get("state")
    return Observation(
        images=images,
        instruction=job["instruction"],
        state=None if state is None else np.asarray(state, dtype=np.float64),
        options=dict(job.get("options") or {}),
    )
