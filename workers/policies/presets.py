"""The tiny presets by name, and the one function that writes them (tests, `make run`, `vlaapi models build-tiny`).

Apart from tiny.py (the two architectures) and tiny_pi0_layouts.py (pi0 in LeRobot's and openpi's layouts),
so that the layouts can build on the native pi0 preset without an import cycle.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from workers.policies.fingerprint import FILE_NAME
from workers.policies.pi05.tiny import BUILDERS as PI05_BUILDERS
from workers.policies.tiny import build_openvla_tiny, build_pi0_tiny
from workers.policies.tiny_pi0_layouts import BUILDERS as PI0_LAYOUT_BUILDERS

log = logging.getLogger(__name__)
TINY_NAMES = ("openvla-tiny", "pi0-tiny", "pi0-tiny-lerobot", "pi0-tiny-lerobot-v0", "pi0-tiny-openpi", "pi05-tiny",
              "pi05-tiny-openpi", "smolvla-tiny")


def _build_smolvla_tiny(out_dir: Path) -> Path:
    from workers.policies.smolvla.tiny import build_smolvla_tiny  # transformers' SmolVLM: only when building

    return build_smolvla_tiny(out_dir)


BUILDERS = {"openvla-tiny": build_openvla_tiny, "pi0-tiny": build_pi0_tiny, **PI0_LAYOUT_BUILDERS, **PI05_BUILDERS,
            "smolvla-tiny": _build_smolvla_tiny}


def build_tiny_checkpoints(
    out_dir: Path, names: tuple[str, ...] | list[str] = TINY_NAMES, *, overwrite: bool = True
) -> dict[str, Path]:
    """Write each named tiny checkpoint, registered (its fingerprint beside the weights, float32 CPU outputs),
    to out_dir/<name> and return name -> directory.

    Each is built and registered in a temporary sibling and renamed into place, so a worker that starts while
    another is building never sees a half-written checkpoint. With overwrite=False a registered one is kept
    (one built before fingerprints existed is rebuilt: same seed, same weights).
    """
    from workers.policies.register import register  # register -> registry -> here

    out: dict[str, Path] = {}
    for name in names:
        if name not in BUILDERS:
            raise ValueError(f"no tiny preset {name!r}; known: {sorted(BUILDERS)}")
        target = Path(out_dir) / name
        out[name] = target
        if (target / FILE_NAME).is_file() and not overwrite:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("building tiny checkpoint %s into %s", name, target)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        try:
            BUILDERS[name](tmp)
            register(tmp, name=name, dtype="float32", device="cpu")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(tmp, target)
    return out


def _swap_in(tmp: Path, target: Path) -> None:
    """Move the old directory aside, the new one in: a loader that has the old files open keeps reading
    them, and at no moment is there a half-written checkpoint under the name. Losing a race to another
    builder is fine: its checkpoint is identical (fixed seed)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{time.monotonic_ns()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
