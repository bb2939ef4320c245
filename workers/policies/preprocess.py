"""Image preprocessing shared by the backends, each as its reference does it (OpenVLA: PIL bicubic;
pi0: openpi's PIL bilinear resize-with-pad)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def resize_naive(img: np.ndarray, size: int) -> np.ndarray:
    """Bicubic straight to size x size, aspect ratio not kept (OpenVLA's resize-naive). PIL antialiases."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.array(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """openpi_client.image_tools.resize_with_pad: PIL bilinear to fit inside size x size keeping the aspect
    ratio (sides truncated, not rounded: int(side / ratio)), pasted at the truncated half-offsets on black."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img
    ratio = max(w / size, h / size)
    nh, nw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = max(0, int((size - nh) / 2)), max(0, int((size - nw) / 2))
    out[top : top + nh, left : left + nw] = resized
    return out


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 HWC -> float32 CHW, scaled to [0, 1] then (x - mean) / std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s
