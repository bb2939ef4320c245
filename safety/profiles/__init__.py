"""Robot profiles: JSON data files in this folder plus any folder listed in SAFETY_PROFILE_DIRS.

A profile file holds the defaults for one robot type (limits, workspace, conventions, default mode) and cites
where each number comes from in its "source" field. Folders named in SAFETY_PROFILE_DIRS (os.pathsep-separated)
are read after this one, so a deployment can add robots or replace a built-in profile by id.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safety import _validate as v
from safety.config import GRIPPER_CONVENTIONS, RobotConfig, _shared_fields, finalise, normalise_mode
from safety.errors import SafetyConfigError, UnknownProfileError

BUILTIN_DIR = Path(__file__).resolve().parent
ENV_VAR = "SAFETY_PROFILE_DIRS"
PROFILE_KEYS = (
    "id", "version", "name", "source", "notes", "control_hz", "velocity_limits", "workspace_bounds",
    "table_height", "collision_margin", "obstacles", "gripper", "action", "default_mode",
)
REQUIRED = ("id", "version", "source", "control_hz", "velocity_limits", "workspace_bounds", "gripper", "action",
            "default_mode")


@dataclasses.dataclass(frozen=True, eq=False)
class Profile:
    config: RobotConfig
    raw_obstacles: list  # kept un-inflated so a request's collision_margin can re-inflate them
    data: dict[str, Any]  # the file as read, for listing and documentation
    path: str


# Parsed files, keyed by (path, mtime) so an edited file is re-read without a restart.
_CACHE: dict[tuple[str, float], Profile] = {}


def profile_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [BUILTIN_DIR, *extra]


# The folders' listing, keyed by each folder's mtime (a file added or removed changes it): every safety check
# loads a profile, and globbing the folders each time cost more than the rule checks themselves.
_INDEX: dict[tuple, dict[str, Path]] = {}


def _index() -> dict[str, Path]:
    folders = profile_dirs()
    key = tuple((str(f), _mtime(f)) for f in folders)
    found = _INDEX.get(key)
    if found is None:
        found = {}
        for folder in folders:
            if folder.is_dir():
                for path in sorted(folder.glob("*.json")):
                    found[path.stem] = path  # later folders win
        _INDEX.clear()
        _INDEX[key] = found
    return found


def _mtime(folder: Path) -> int | None:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return None


def list_profiles() -> list[dict[str, Any]]:
    """Every loadable profile's summary; raises SafetyConfigError if any file is invalid (fail loudly at boot)."""
    return [dict(load_profile(name).data) for name in sorted(_index())]


def load_profile(name: str) -> Profile:
    index = _index()
    if not isinstance(name, str) or name not in index:
        raise UnknownProfileError("robot_config.type", f"unknown robot type {name!r}; known: {sorted(index)}"
                                  + v.suggest(str(name), index))
    path = index[name]
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        _CACHE[key] = _parse(path)
    return _CACHE[key]


def _parse(path: Path) -> Profile:
    prefix = f"profile:{path.name}."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SafetyConfigError(f"profile:{path.name}", f"cannot read: {exc}") from exc
    data = v.mapping_of(data, f"profile:{path.name}")
    v.only_keys(data, PROFILE_KEYS, prefix.rstrip("."))
    for key in REQUIRED:
        if key not in data:
            raise SafetyConfigError(prefix + key, "is required")
    if data["id"] != path.stem:
        raise SafetyConfigError(prefix + "id", f"must equal the file name {path.stem!r}")
    fields = {"id": str(data["id"]), "version": str(data["version"]), "source": str(data["source"]),
              "table_height": None, "collision_margin": 0.0,
              "default_mode": normalise_mode(data["default_mode"], prefix + "default_mode")}
    fields.update(_shared_fields(data, prefix))
    fields.update(_gripper(data["gripper"], prefix + "gripper"))
    fields.update(_action(data["action"], prefix + "action", fields["gripper_index"]))
    obstacles = data.get("obstacles", [])
    return Profile(finalise(fields, obstacles, prefix), list(obstacles), data, str(path))


def _gripper(value: Any, field: str) -> dict[str, Any]:
    m = v.mapping_of(value, field)
    v.only_keys(m, ("convention", "index", "description"), field)
    conv = m.get("convention")
    if conv not in GRIPPER_CONVENTIONS:
        raise SafetyConfigError(field + ".convention", f"one of {sorted(GRIPPER_CONVENTIONS)}")
    lo, hi = GRIPPER_CONVENTIONS[conv]
    index = int(v.number(m.get("index", 6), field + ".index"))
    return {"gripper_convention": conv, "gripper_min": lo, "gripper_max": hi, "gripper_index": index}


def _action(value: Mapping[str, Any], field: str, gripper_index: int) -> dict[str, Any]:
    m = v.mapping_of(value, field)
    v.only_keys(m, ("convention", "dim", "units", "step_bounds", "description"), field)
    if m.get("convention") != "delta_ee":
        raise SafetyConfigError(field + ".convention", "only 'delta_ee' (xyz, rpy deltas + absolute gripper)")
    dim = int(v.number(m.get("dim", 7), field + ".dim"))
    if dim != 7 or gripper_index != 6:
        raise SafetyConfigError(field + ".dim", "the delta_ee convention is 7-D with the gripper in slot 6")
    low, high = np.full(6, -np.inf), np.full(6, np.inf)
    if "step_bounds" in m:
        low, high = v.box(m["step_bounds"], field + ".step_bounds", lo_key="low", hi_key="high", length=6)
        # Uniform scaling needs zero (no motion) inside the bounds.
        if np.any(low >= 0) or np.any(high <= 0):
            raise SafetyConfigError(field + ".step_bounds", "low must be < 0 < high on every axis")
    return {"action_dim": dim, "step_low": low, "step_high": high}
