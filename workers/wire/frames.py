"""A job's camera images beside its message: raw bytes in one Redis hash per job, written once by the web.

The Celery message (JSON, which kombu's Redis transport base64-encodes again and also copies into its
unacked hash) and the reaper's resend copy carry only each image's description: sha256, size, and either
the encoded format (PNG/JPEG/WebP, the bytes exactly as the client sent them) or a raw array's dtype and
shape (the compatibility doors: the client's array bytes, never re-encoded). So an image crosses Redis once,
as bytes: one HSET by the web, pipelined with the resend copy, one HMGET by the GPU worker.

At-least-once delivery still holds: the hash lives until the job's deadline plus MARGIN_S (a redelivered
or re-published message finds it; after the deadline the worker drops the job anyway), and the worker
that ends the job deletes it. A hash that is gone (Redis lost it) ends the job `failed` with the code
`images_missing`: a clear answer, never a hang. A byte string whose sha256 differs from its description
ends it the same way: the worker never runs a model on the wrong images.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

MARGIN_S = 30.0
RAW = "raw"
_RAW_KINDS = {"u", "i"}  # integer pixel values; the web refuses anything outside 0..255


class FramesMissing(LookupError):
    """The job's images are gone from Redis, or differ from what the web described."""

    def __init__(self, camera: str, why: str):
        super().__init__(f"images.{camera}: {why}")
        self.camera = camera
        self.why = why


def key(job_id: str) -> str:
    return f"job:{job_id}:img"


def describe(data: bytes, **meta: Any) -> dict[str, Any]:
    """An image's description in the message: its digest and size, plus `format` (and, raw, dtype/shape)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **meta}


def stage(pipe: Any, job_id: str, frames: Mapping[str, bytes], ttl_s: float) -> None:
    """Queue the HSET and its expiry on `pipe` (the caller's pipeline, which also carries the resend copy)."""
    if not frames:
        return
    pipe.hset(key(job_id), mapping=dict(frames))
    pipe.pexpire(key(job_id), int(ttl_s * 1000))


def ttl_for(deadline_s: float) -> float:
    """Outlive the job's deadline (redelivery, the reaper's re-publish), not much longer."""
    return deadline_s + MARGIN_S


def fetch(r: Any, job_id: str, described: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
    """Every camera's bytes in one round trip, each checked against its description; FramesMissing else."""
    cams = list(described)
    if not cams:
        return {}
    values = r.hmget(key(job_id), cams)
    out: dict[str, bytes] = {}
    for cam, data in zip(cams, values, strict=True):
        if data is None:
            raise FramesMissing(cam, "the job's images are no longer stored (Redis lost them); submit again")
        if hashlib.sha256(data).hexdigest() != described[cam].get("sha256"):
            raise FramesMissing(cam, "the stored image differs from the one submitted; submit again")
        out[cam] = data
    return out


def raw_array(data: bytes, meta: Mapping[str, Any]) -> np.ndarray:
    """A raw frame's array, without copying: its dtype and shape were checked by the web (check_raw)."""
    return np.frombuffer(data, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])


def check_raw(dtype: np.dtype, shape: tuple[int, ...], max_pixels: int) -> str | None:
    """Why an array cannot be a camera image (None if it can): integer pixels, (H, W), (H, W, C) or (C, H, W)
    with C in 1, 3, 4, at most max_pixels."""
    if dtype.kind not in _RAW_KINDS or dtype.itemsize > 8:
        return f"image must be an integer array (uint8), not {dtype.str}"
    if len(shape) not in (2, 3) or 0 in shape:
        return f"image has shape {list(shape)}; expected (H, W, 3)"
    h, w = height_width(shape)
    if len(shape) == 3 and _channels(shape) not in (1, 3, 4):
        return f"image has shape {list(shape)}; expected (H, W, 3)"
    if h * w > max_pixels:
        return f"image is {w}x{h}; at most {max_pixels} pixels"
    return None


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) integer pixels -> contiguous (H, W, 3) uint8, the policies' input."""
    if arr.ndim == 3 and _channels_first(arr.shape):
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA: Pillow's convert("RGB") also drops alpha without compositing
    return np.ascontiguousarray(arr)


def _channels_first(shape: tuple[int, ...]) -> bool:
    # openpi's ALOHA layout is (3, H, W); an (H, W, 3) image with H == 3 is not a camera frame anyone sends.
    return len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


def _channels(shape: tuple[int, ...]) -> int:
    return shape[0] if _channels_first(shape) else shape[-1]


def height_width(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 3 and _channels_first(shape):
        return shape[1], shape[2]
    return shape[0], shape[1]
