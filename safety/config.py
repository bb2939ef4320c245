"""The resolved robot configuration: a profile with the request's robot_config overrides applied.

Everything here is validated once; the checks then trust these arrays (no re-validation on the hot path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from safety import _validate as v
from safety.constants import MAX_OBSTACLES, MODE_ALIASES, MODES
from safety.errors import SafetyConfigError

GRIPPER_CONVENTIONS = {"absolute_0_1": (0.0, 1.0), "absolute_-1_1": (-1.0, 1.0)}
OVERRIDE_KEYS = (
    "type", "workspace_bounds", "velocity_limits", "control_frequency_hz", "obstacles", "table_height",
    "collision_margin",
)


@dataclasses.dataclass(frozen=True, eq=False)
class RobotConfig:
    id: str
    version: str
    control_hz: float
    v_trans: float  # m/s, norm of the xyz delta per step times control_hz
    v_rot: float  # rad/s, norm of the rpy delta per step times control_hz
    ws_min: np.ndarray  # (3,) metres
    ws_max: np.ndarray
    rpy_min: np.ndarray | None  # (3,) rad, optional orientation bounds
    rpy_max: np.ndarray | None
    table_height: float | None  # the plane z = table_height; positions must stay collision_margin above it
    collision_margin: float
    obs_min: np.ndarray  # (K,3), already inflated by collision_margin
    obs_max: np.ndarray
    gripper_index: int
    gripper_min: float
    gripper_max: float
    gripper_convention: str
    action_dim: int
    step_low: np.ndarray  # (6,) per-axis per-step delta bounds (from the action spec); -inf when none
    step_high: np.ndarray
    default_mode: str
    source: str = ""

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz

    @property
    def box_min(self) -> np.ndarray:
        """Workspace lower bound with the table plane folded in (z >= table + margin)."""
        if self.table_height is None:
            return self.ws_min
        low = self.ws_min.copy()
        low[2] = max(low[2], self.table_height + self.collision_margin)
        return low

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "control_hz": self.control_hz}


def normalise_mode(mode: Any, field: str = "mode") -> str:
    if not isinstance(mode, str):
        raise SafetyConfigError(field, "must be a string")
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise SafetyConfigError(field, f"unknown mode {mode!r}; one of {list(MODES)}" + v.suggest(mode, MODES))
    return mode


def _obstacles(value: Any, field: str, margin: float) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, list):
        raise SafetyConfigError(field, "must be a list of {min, max} boxes")
    if len(value) > MAX_OBSTACLES:
        raise SafetyConfigError(field, f"at most {MAX_OBSTACLES} obstacles")
    boxes = []
    for i, item in enumerate(value):
        v.only_keys(v.mapping_of(item, f"{field}[{i}]"), ("min", "max", "name"), f"{field}[{i}]")
        boxes.append(v.box(item, f"{field}[{i}]"))
    lo = np.array([b[0] for b in boxes], dtype=np.float64).reshape(-1, 3) - margin
    hi = np.array([b[1] for b in boxes], dtype=np.float64).reshape(-1, 3) + margin
    return lo, hi


def _workspace(value: Any, field: str) -> dict[str, Any]:
    m = v.mapping_of(value, field)
    v.only_keys(m, ("min", "max", "rpy_min", "rpy_max"), field)
    lo, hi = v.box(m, field)
    out: dict[str, Any] = {"ws_min": lo, "ws_max": hi, "rpy_min": None, "rpy_max": None}
    if "rpy_min" in m or "rpy_max" in m:
        out["rpy_min"], out["rpy_max"] = v.box(m, field, lo_key="rpy_min", hi_key="rpy_max")
    return out


def _velocity(value: Any, field: str) -> dict[str, float]:
    m = v.mapping_of(value, field)
    v.only_keys(m, ("translational", "rotational"), field)
    out = {}
    for key, attr in (("translational", "v_trans"), ("rotational", "v_rot")):
        if key not in m:
            raise SafetyConfigError(f"{field}.{key}", "is required")
        out[attr] = v.number(m[key], f"{field}.{key}", positive=True)
    return out


def _shared_fields(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Fields that both a profile file and a request's robot_config may set (same names, same checks)."""
    out: dict[str, Any] = {}
    if "workspace_bounds" in data:
        out.update(_workspace(data["workspace_bounds"], f"{prefix}workspace_bounds"))
    if "velocity_limits" in data:
        out.update(_velocity(data["velocity_limits"], f"{prefix}velocity_limits"))
    for key, attr in (("control_frequency_hz", "control_hz"), ("control_hz", "control_hz")):
        if key in data:
            out[attr] = v.number(data[key], f"{prefix}{key}", positive=True)
    if "table_height" in data:
        th = data["table_height"]
        out["table_height"] = None if th is None else v.number(th, f"{prefix}table_height")
    if "collision_margin" in data:
        out["collision_margin"] = v.number(data["collision_margin"], f"{prefix}collision_margin")
        if out["collision_margin"] < 0:
            raise SafetyConfigError(f"{prefix}collision_margin", "must be >= 0")
    return out


def finalise(fields: dict[str, Any], raw_obstacles: Any, prefix: str) -> RobotConfig:
    """Inflate obstacles by the margin and check cross-field consistency."""
    lo, hi = _obstacles(raw_obstacles or [], f"{prefix}obstacles", fields["collision_margin"])
    cfg = RobotConfig(**fields, obs_min=lo, obs_max=hi)
    if cfg.box_min[2] > cfg.ws_max[2]:
        raise SafetyConfigError(f"{prefix}table_height", "table plane plus margin lies above the workspace's max z")
    return cfg


def apply_overrides(base: RobotConfig, raw_obstacles: list, robot_config: Mapping[str, Any]) -> RobotConfig:
    """The request's robot_config replaces the profile's values key by key (obstacles replace, not append)."""
    v.only_keys(robot_config, OVERRIDE_KEYS, "robot_config")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if not f.name.startswith("obs_")}
    fields.update(_shared_fields(robot_config, "robot_config."))
    obstacles = robot_config.get("obstacles", raw_obstacles)
    return finalise(fields, obstacles, "robot_config.")
