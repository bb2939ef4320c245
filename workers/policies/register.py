"""`vlaapi models register <dir>`: write a checkpoint's fingerprint (fingerprint.py) after loading it through
the real loader and passing its self-check, so a fingerprint is only ever made from a checkpoint that works.

Where it goes: --out FILE, else FINGERPRINT_DIR/<dir name>.json when that setting is given (a read-only
mount), else <dir>/vlaapi-fingerprint.json. Registering again with another dtype or device adds that
record and keeps the others, as long as the tensors and files are unchanged.
"""
from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from workers.policies import fingerprint
from workers.policies.checkpoint import require_dir
from workers.policies.errors import CheckpointError

log = logging.getLogger(__name__)


def target_path(ckpt: Path, out: Path | None = None, fingerprint_dir: Path | None = None) -> Path:
    if out is not None:
        return Path(out)
    if fingerprint_dir:
        return Path(fingerprint_dir) / f"{ckpt.name}.json"
    return ckpt / fingerprint.FILE_NAME


def _writable(target: Path) -> None:
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"cannot write the fingerprint to {str(target)!r} ({str(folder)!r} is read-only): "
                              "pass --out FILE, or set FINGERPRINT_DIR to a writable folder that every worker "
                              "can read")


def register(ckpt: Path | str, *, name: str | None = None, out: Path | None = None,
             fingerprint_dir: Path | None = None, dtype: str = "float32", device: str = "cpu",
             options: dict[str, str] | None = None) -> Path:
    """Fingerprint `ckpt` (digests, then the fixed inputs' outputs in `dtype` on `device`); return the file."""
    from workers.policies.loading import load_checkpoint
    from workers.policies.selfcheck import record_outputs

    ckpt = require_dir(ckpt)
    target = target_path(ckpt, out, fingerprint_dir)
    _writable(target)
    tensors, files = fingerprint.tensor_digests(ckpt), fingerprint.file_digests(ckpt)
    policy = load_checkpoint(name or ckpt.name, ckpt, dtype=dtype, device=device, options=options,
                             fingerprints="ignore")  # loads strictly and runs the self-check
    record = {**record_outputs(policy), "options": dict(sorted((options or {}).items()))}
    outputs = [record] + [r for r in _previous_outputs(target, tensors, files)
                          if (r.get("dtype"), r.get("device"), r.get("options") or {})
                          != (record["dtype"], record["device"], record["options"])]
    fingerprint.write(target, {
        "format": fingerprint.FORMAT, "checkpoint": name or ckpt.name, "family": policy.spec.family,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "tensors": tensors, "files": files,
        "outputs": outputs,
    })
    log.info("registered %s: %d tensors, %d files, outputs in %s", ckpt, len(tensors), len(files),
             ", ".join(f"{r['dtype']}/{r['device']}" for r in outputs))
    return target


def _previous_outputs(target: Path, tensors: dict, files: dict) -> list[dict]:
    """The records of an earlier registration of the very same tensors and files (other dtypes/devices)."""
    if not target.is_file():
        return []
    try:
        old = fingerprint.read(target)
    except CheckpointError:
        return []
    if old["tensors"] != tensors or old.get("files") != files:
        return []
    return list(old.get("outputs", []))
