"""Resolve a customer-supplied dataset name against the operator's allow-listed root."""
from __future__ import annotations

from pathlib import Path

from workers.replays.errors import DatasetError


def resolve_dataset_path(name: str, allowed_root: Path) -> Path:
    """The real path of `name` under `allowed_root`; anything escaping it (.., symlinks) is refused.

    The check is made on the fully resolved path, so a symlink inside the root that points outside it is
    refused as surely as "../../etc". The result is resolved too: later reads cannot be redirected by a
    symlink swapped in between the check and the open, short of a write inside the root itself.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise DatasetError("dataset", "a dataset name is required")
    try:
        root = Path(allowed_root).resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise DatasetError("dataset", "the dataset root is not configured or does not exist") from None
    try:
        path = (root / name).resolve()
    except (RuntimeError, OSError):  # symlink loops, over-long names
        raise DatasetError("dataset", f"dataset {name!r} cannot be resolved") from None
    if root not in path.parents:
        raise DatasetError("dataset", f"dataset {name!r} is outside the allowed root")
    if not path.exists():
        raise DatasetError("dataset", f"dataset {name!r} not found")
    return path
