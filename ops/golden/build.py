"""`python -m ops.golden build`: reference envs, tiny checkpoints, runs, fixtures under tests/golden/.

Each reference gets its own venv under .data/golden-envs (its own pinned stack; see envs.py) and runs
a script from ops/golden/runners/ that imports only that reference. Nothing here is needed by the
tests: they read the committed fixture files.
"""
from __future__ import annotations

import argparse
import glob
import logging
import sys
from pathlib import Path

from ops.golden import (
    openpi_images,
    openpi_norm,
    openvla,
    openvla_crop,
    pi0_lerobot,
    pi0_rtc,
    pi05_lerobot,
    pi05_rtc,
    smolvla_lerobot,
)
from ops.golden.envs import make_env

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / ".data" / "golden-envs"
WORK = ROOT / ".data" / "golden-work"
DEFAULT_OPENVLA_SRC = Path("/work/.mirror/openvla+openvla/repo")
DEFAULT_OPENPI_SRC = Path("/work/.mirror/Physical-Intelligence+openpi/repo")
TARGETS = ("openvla", "openvla-crop", "openpi-images", "openpi-norm", *pi0_lerobot.VARIANTS, "pi0-rtc-lerobot06",
           "pi05-lerobot06", "pi05-rtc-lerobot06", "smolvla-lerobot06")
log = logging.getLogger("ops.golden")


def find_python(minor: str) -> str:
    """A python3.<minor> interpreter: pyenv's, else one on PATH."""
    found = sorted(glob.glob(str(Path.home() / f".pyenv/versions/3.{minor}.*/bin/python")))
    if found:
        return found[-1]
    import shutil

    exe = shutil.which(f"python3.{minor}")
    if not exe:
        raise SystemExit(f"no Python 3.{minor} found (pyenv or PATH); it is needed for a reference env")
    return exe


def build_models() -> Path:
    from workers.policies.presets import build_tiny_checkpoints

    models = WORK / "models"
    build_tiny_checkpoints(models, ["openvla-tiny", "pi0-tiny", "pi05-tiny", "smolvla-tiny"])
    return models


def run(targets: list[str], openvla_src: Path, openpi_src: Path) -> list[Path]:
    models = build_models()
    py311 = find_python("11")
    written = []
    if "openvla" in targets:
        py = make_env(ENVS, "openvla", py311, openvla.REQUIREMENTS, link_torch=True)
        written.append(openvla.build(py, models / "openvla-tiny", openvla_src, WORK))
    if "openvla-crop" in targets:
        py = make_env(ENVS, "openvla-tf", py311, openvla_crop.REQUIREMENTS, link_torch=False)
        written.append(openvla_crop.build(py, openvla_src, WORK))
    if "openpi-images" in targets:
        py = make_env(ENVS, "openpi-client", py311, openpi_images.REQUIREMENTS, link_torch=False,
                      no_deps=openpi_images.NO_DEPS)
        written.append(openpi_images.build(py, WORK))
    if "openpi-norm" in targets:
        py = make_env(ENVS, "openpi", py311, openpi_norm.REQUIREMENTS, link_torch=True, no_deps=openpi_norm.NO_DEPS)
        written.append(openpi_norm.build(py, models / "pi0-tiny", openpi_src, WORK))
    for name, v in pi0_lerobot.VARIANTS.items():
        if name in targets:
            py = make_env(ENVS, v.env, find_python(v.python_minor), v.requirements, link_torch=v.link_torch,
                          no_deps=v.no_deps)
            written.append(pi0_lerobot.build(v, py, models / "pi0-tiny", WORK))
    if "pi0-rtc-lerobot06" in targets:  # the same LeRobot 0.6.1 env as pi0-lerobot06
        v = pi0_lerobot.VARIANTS["pi0-lerobot06"]
        py = make_env(ENVS, v.env, find_python(v.python_minor), v.requirements, link_torch=v.link_torch,
                      no_deps=v.no_deps)
        written.append(pi0_rtc.build(py, models / "pi0-tiny", WORK))
    if "pi05-lerobot06" in targets:
        v = pi05_lerobot.VARIANT
        py = make_env(ENVS, v.env, find_python(v.python_minor), v.requirements, link_torch=v.link_torch)
        written.append(pi05_lerobot.build(py, models / "pi05-tiny", WORK))
    if "pi05-rtc-lerobot06" in targets:  # the same LeRobot 0.6.1 env
        v = pi05_lerobot.VARIANT
        py = make_env(ENVS, v.env, find_python(v.python_minor), v.requirements, link_torch=v.link_torch)
        written.append(pi05_rtc.build(py, models / "pi05-tiny", WORK))
    if "smolvla-lerobot06" in targets:  # the same env as pi0-lerobot06 (one LeRobot 0.6.1 env serves both)
        py = make_env(ENVS, smolvla_lerobot.ENV, find_python(smolvla_lerobot.PYTHON_MINOR), pi0_lerobot.LEROBOT_06,
                      link_torch=False)
        written.extend(smolvla_lerobot.build_all(py, models, WORK))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.golden", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="(re)create the reference envs and regenerate the fixtures")
    b.add_argument("--only", action="append", choices=TARGETS, help="one reference (repeatable); default all")
    b.add_argument("--openvla-src", type=Path, default=DEFAULT_OPENVLA_SRC,
                   help="openvla/openvla git dir or checkout, or a folder with the three *_prismatic.py files")
    b.add_argument("--openpi-src", type=Path, default=DEFAULT_OPENPI_SRC,
                   help="Physical-Intelligence/openpi git dir or checkout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for path in run(args.only or list(TARGETS), args.openvla_src, args.openpi_src):
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
