"""The golden fixture file format: one compressed .npz per reference, arrays plus a JSON `meta` entry
(what produced it, with which versions, on which weights, and the adaptations made for tiny weights)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"
REGENERATE = "make golden  (or: python -m ops.golden build)"


def save_fixture(name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    path = FIXTURE_DIR / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta, indent=1, sort_keys=True)), **arrays)
    return path


def load_fixture(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta); the arrays are read eagerly so the file is closed at once."""
    with np.load(FIXTURE_DIR / f"{name}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return arrays, meta


def pixels_to_u8(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Lossless storage of a reference's normalised pixel tensor (..., 3, H, W) from a uint8 image: the
    uint8 (..., H, W, 3) it came from. Raises if the tensor is not exactly such an image."""
    u = np.rint((pixels * std[:, None, None] + mean[:, None, None]) * 255.0)
    back = u8_to_pixels(u.astype(np.uint8), mean, std)
    err = float(np.abs(back - pixels).max())
    if err > 1e-5 or u.min() < 0 or u.max() > 255:
        raise ValueError(f"pixel tensor is not a normalised uint8 image (round-trip error {err:.2e})")
    return np.moveaxis(u.astype(np.uint8), -3, -1)


def u8_to_pixels(u8_chw_or_hwc: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x / 255 - mean) / std in float32, channel-first; accepts (..., H, W, 3) or (..., 3, H, W)."""
    x = u8_chw_or_hwc
    if x.shape[-1] == 3:
        x = np.moveaxis(x, -1, -3)
    x = x.astype(np.float32) / np.float32(255.0)
    return (x - mean.astype(np.float32)[:, None, None]) / std.astype(np.float32)[:, None, None]
