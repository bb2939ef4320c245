"""Checkpoint directories in the formats the hub ships: config.json plus safetensors (sharded with
model.safetensors.index.json, or a single model.safetensors), and a strict name/shape check.

The strict check exists because a silently half-loaded VLA still produces well-formed actions
(see the reference's note on upstream generate() skipping the image): a wrong checkpoint must fail at
load time, naming what is missing and what is unexpected.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workers.policies.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_LIST_LIMIT = 12  # enough to recognise a prefix problem without flooding the log


def require_dir(path: Path | str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint directory {str(path)!r} has no config.json")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing file {str(path)!r}") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def shard_files(ckpt_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, from the index when there is one."""
    index = ckpt_dir / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{str(index)!r} has no weight_map")
        files = [ckpt_dir / name for name in sorted(set(weight_map.values()))]
    elif (ckpt_dir / SINGLE_FILE).is_file():
        files = [ckpt_dir / SINGLE_FILE]
    else:
        raise CheckpointError(f"no {INDEX_FILE} or {SINGLE_FILE} in {str(ckpt_dir)!r}")
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"shard(s) named by the index are missing in {str(ckpt_dir)!r}: {absent}")
    return files


def iter_tensors(ckpt_dir: Path, device: torch.device | str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (name, tensor) pairs shard by shard so peak memory stays at one tensor, not one model."""
    for file in shard_files(ckpt_dir):
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def checkpoint_shapes(ckpt_dir: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes without reading tensor data, for the strict check."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in shard_files(ckpt_dir):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _fmt(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    more = len(names) - _LIST_LIMIT
    return shown + (f" ... (+{more} more)" if more > 0 else "")


def strict_check(
    found: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    *,
    rename: Callable[[str], str] = lambda k: k,
    ignorable: Callable[[str], bool] = lambda k: False,
) -> dict[str, str]:
    """Map checkpoint names onto module names; raise CheckpointError naming every mismatch.

    `rename` turns a checkpoint name into the module's name; `ignorable` says which checkpoint names are
    known to be present but unused by inference (they are skipped, never required). Returns the
    checkpoint-name -> module-name map of the tensors to load.
    """
    mapping = {k: rename(k) for k in found if not ignorable(k)}
    targets = set(mapping.values())
    missing = sorted(set(expected) - targets)
    unexpected = sorted(k for k, v in mapping.items() if v not in expected)
    bad_shape = sorted(
        f"{k} {found[k]} vs {expected[v]}"
        for k, v in mapping.items()
        if v in expected and tuple(found[k]) != tuple(expected[v])
    )
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatches ({len(bad_shape)}): {_fmt(bad_shape)}")
        raise CheckpointError("checkpoint does not match the architecture: " + "; ".join(parts))
    return {k: v for k, v in mapping.items() if v in expected}


def load_into(module: torch.nn.Module, ckpt_dir: Path, name_map: Mapping[str, str], device: torch.device) -> None:
    """Copy checkpoint tensors into an already built module, casting along the documented paths only
    (docs/models.md, "dtypes"): a floating tensor into the parameter's floating dtype (fp32, bf16, fp16, in
    either direction); any other tensor only into its own dtype. An int8 tensor where a float weight belongs
    is a quantised or corrupted checkpoint, and copy_ would cast it silently: refused, naming it. Then every
    floating weight must be finite (a NaN weight makes every logit NaN, and argmax still picks a token)."""
    params = dict(module.state_dict(keep_vars=True))
    with torch.no_grad():
        for name, tensor in iter_tensors(ckpt_dir, device=device if device.type == "cuda" else "cpu"):
            target = name_map.get(name)
            if target is not None:
                check_cast(name, tensor.dtype, params[target].dtype)
                params[target].copy_(tensor)
    require_finite({ckpt: params[target] for ckpt, target in name_map.items()})


def check_cast(name: str, found: torch.dtype, want: torch.dtype) -> None:
    """Raise CheckpointError unless `found` may be cast to `want` (floating to floating, else equal)."""
    if found == want or (found.is_floating_point and want.is_floating_point):
        return
    raise CheckpointError(f"tensor {name!r} is stored as {str(found).removeprefix('torch.')} where the model "
                          f"holds {str(want).removeprefix('torch.')}: not a documented cast (a quantised or "
                          "corrupted checkpoint?); see docs/models.md")


def require_finite(tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every floating tensor that holds a NaN or an infinity. One flag per
    tensor, all read back together: one device synchronisation, not one per tensor."""
    names = [n for n, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not names:
        return
    flags = torch.stack([torch.isfinite(tensors[n]).all() for n in names]).cpu().tolist()
    bad = [n for n, ok in zip(names, flags, strict=True) if not ok]
    if bad:
        raise CheckpointError(f"non-finite values (NaN or inf) in {len(bad)} tensor(s): {_fmt(sorted(bad))}")


def save_sharded(state: Mapping[str, torch.Tensor], out_dir: Path, max_shard_bytes: int | None = None) -> list[Path]:
    """Write safetensors the way save_pretrained does: one file, or shards plus a weight_map index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if max_shard_bytes is None:
        save_file(tensors, str(out_dir / SINGLE_FILE), metadata={"format": "pt"})
        return [out_dir / SINGLE_FILE]
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += nbytes
    n = len(groups)
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(group, str(out_dir / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in group})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_json(out_dir / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [out_dir / f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in the serving dtype: a 7B model built in fp32 first would need 2x memory."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def module_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
