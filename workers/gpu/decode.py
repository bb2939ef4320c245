"""The JSON job payload a GPU worker receives, and its conversion into a policy Observation.

This is the one place a job's images are decoded to pixels (the web only inspects headers). The message
describes each image (workers/wire/frames.py); its bytes wait beside it in Redis until the job ends, so a
redelivered job still has them. Encoded images (PNG/JPEG/WebP, as the client sent them) are decoded here,
once; raw arrays (the compatibility doors) are only viewed (np.frombuffer) and laid out as (H, W, 3) uint8.
A message from before the side channel (base64 strings in "images") is still understood.
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError
from workers.wire import frames
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


def described(job: dict) -> dict[str, dict]:
    """The images the message describes (those that travel beside it); empty for an old-style message."""
    return {cam: meta for cam, meta in job["images"].items() if isinstance(meta, dict)}


def decode_frame(field: str, data: bytes, meta: dict) -> np.ndarray:
    if meta.get("format") == frames.RAW:
        return frames.to_rgb(frames.raw_array(data, meta))
    return decode_image_bytes(field, data)


def to_observation(job: dict, stored: dict[str, bytes] | None = None) -> Observation:
    """`stored`: the bytes of the images `described(job)` names, as frames.fetch returned them."""
    stored = stored or {}
    images = {cam: decode_frame(f"images.{cam}", stored[cam], meta) if isinstance(meta, dict)
              else decode_image(f"images.{cam}", meta) for cam, meta in job["images"].items()}
    state = job.get("state")
    return Observation(
        images=images,
        instruction=job["instruction"],
        state=None if state is None else np.asarray(state, dtype=np.float64),
        options=dict(job.get("options") or {}),
    )
