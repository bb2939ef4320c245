"""Small helpers shared by the backends: input checks, building modules on a device, tokenizer loading."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from workers.policies.checkpoint import checkpoint_shapes, default_dtype, load_into, module_shapes, strict_check
from workers.policies.errors import CheckpointError, PolicyInputError

EE_DELTA_UNITS = ["m", "m", "m", "rad", "rad", "rad", "gripper_open_fraction"]
M = TypeVar("M", bound=torch.nn.Module)


def check_state(state: Any, dim: int | None, *, required: bool) -> None:
    """Finite 1-D numbers of the expected length; `dim=None` accepts any length."""
    if state is None:
        if required:
            raise PolicyInputError("state", f"state is required (length {dim})")
        return
    try:
        arr = np.asarray(state, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyInputError("state", "state must be a list of numbers") from exc
    if arr.ndim != 1:
        raise PolicyInputError("state", f"state must be 1-D, got shape {tuple(arr.shape)}")
    if dim is not None and arr.shape[0] != dim:
        raise PolicyInputError("state", f"state must have length {dim}, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise PolicyInputError("state", "state contains NaN or inf")


def check_seed(options: dict[str, Any]) -> None:
    """A flow policy's `seed` option (its noise): absent, or an integer in [0, 2**63)."""
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise PolicyInputError("options.seed", "seed must be a non-negative integer")


def zscore_padded(states: list[Any], mean: np.ndarray, std: np.ndarray, eps: float, width: int) -> torch.Tensor:
    """(x - mean) / (std + eps) per row in float64, then float32, zero-padded to `width` (pi0, SmolVLA)."""
    z = np.stack([(np.asarray(s, dtype=np.float64) - mean) / (std + eps) for s in states])
    out = torch.zeros(len(states), width)
    out[:, : z.shape[1]] = torch.from_numpy(z).float()
    return out


def build_and_load(
    factory: Callable[[], M],
    ckpt_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    rename: Callable[[str], str] = lambda k: k,
    ignorable: Callable[[str], bool] = lambda k: False,
    expected_filter: Callable[[str], bool] = lambda k: True,
    before_load: Callable[[M], None] = lambda m: None,
) -> M:
    """Build the module directly on `device` in `dtype`, strictly check names/shapes, then load.

    The check runs on the files' headers before any tensor is read, so a wrong checkpoint fails fast.
    `expected_filter` drops module keys that are not weights (e.g. tied or derived buffers). `before_load`
    may change parameter dtypes (pi0's fp32 islands): the checkpoint's values are then copied into those
    dtypes, so an island holds the checkpoint's own fp32 values, never a bf16 rounding of them.
    """
    with torch.device(device), default_dtype(dtype):
        module = factory()
    before_load(module)
    expected = {k: v for k, v in module_shapes(module).items() if expected_filter(k)}
    name_map = strict_check(checkpoint_shapes(ckpt_dir), expected, rename=rename, ignorable=ignorable)
    load_into(module, ckpt_dir, name_map, device)
    return module.eval()


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many types here; the loader's contract is CheckpointError
        raise CheckpointError(f"cannot load the tokenizer from {str(path)!r}: {exc}") from exc


def timings_copy(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in timings.items()}
