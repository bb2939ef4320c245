"""Resolve the MODEL_DTYPE / GPU_DEVICE settings into torch objects.

The worker passes the raw setting strings in; nothing here reads the environment, so tests and the
benchmark can ask for any combination explicitly.
"""
from __future__ import annotations

import torch

from workers.policies.errors import PolicyError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """auto picks cuda:0 when present; an explicit cuda request without CUDA is an error, not a fallback."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise PolicyError(f"GPU_DEVICE={device!r} but CUDA is not available")
        dev = torch.device("cuda:0" if name == "cuda" else name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PolicyError(f"GPU_DEVICE={device!r} but only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise PolicyError(f"GPU_DEVICE must be auto|cpu|cuda|cuda:N, got {device!r}")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto = bf16 on CUDA (what the checkpoints ship in), fp32 on CPU (bf16 matmuls are slow there)."""
    name = (dtype or "auto").strip().lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise PolicyError(f"MODEL_DTYPE must be auto|float32|bfloat16|float16, got {dtype!r}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
