"""The tiny presets by name, and the one function that writes them (tests, `make run`, `vlaapi models build-tiny`).

Apart from tiny.py (the two architectures) and tiny_pi0_layouts.py (pi0 in LeRobot's and openpi's layouts),
so that the layouts can build on the native pi0 preset without an import cycle.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from workers.policies.tiny import build_openvla_tiny, build_pi0_tiny
from workers.policies.tiny_pi0_layouts import BUILDERS as PI0_LAYOUT_BUILDERS

log = logging.getLogger(__name__)
TINY_NAMES = ("openvla-tiny", "pi0-tiny", "pi0-tiny-lerobot", "pi0-tiny-lerobot-v0", "pi0-tiny-openpi")
BUILDERS = {"openvla-tiny": build_openvla_tiny, "pi0-tiny": build_pi0_tiny, **PI0_LAYOUT_BUILDERS}


def build_tiny_checkpoints(
    out_dir: Path, names: tuple[str, ...] | list[str] = TINY_NAMES, *, overwrite: bool = True
) -> dict[str, Path]:
    """Write each named tiny checkpoint to out_dir/<name> and return name -> directory.

    Each is built in a temporary sibling and renamed into place, so a worker that starts while another
    is building never sees a half-written checkpoint. With overwrite=False an existing one is kept.
    """
    out: dict[str, Path] = {}
    builders = BUILDERS
    for name in names:
        if name not in builders:
            raise ValueError(f"no tiny preset {name!r}; known: {sorted(builders)}")
        target = Path(out_dir) / name
        out[name] = target
        if target.exists() and not overwrite:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("building tiny checkpoint %s into %s", name, target)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        builders[name](tmp)
        if target.exists() and overwrite:
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its checkpoint is identical (fixed seed)
            shutil.rmtree(tmp, ignore_errors=True)
    return out
