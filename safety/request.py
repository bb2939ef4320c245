"""Parsing and validation of the per-request inputs: robot_config, robot_state, action_stats, options.

Every problem raises SafetyConfigError naming the field; the web layer calls validate_robot_config() before
queuing so a bad config is a 422 at the edge rather than a failed job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from safety import _validate as v
from safety.config import RobotConfig, apply_overrides
from safety.errors import SafetyConfigError
from safety.profiles import load_profile


def validate_robot_config(robot_config: Mapping[str, Any] | RobotConfig | None, *,
                          default_type: str | None = None) -> RobotConfig:
    """Resolve robot_config["type"] (or default_type) to its profile and apply the overrides.

    A RobotConfig passes through: a caller judging many actions for one robot (a replay window) resolves
    the profile once instead of once per action."""
    if isinstance(robot_config, RobotConfig):
        return robot_config
    robot_config = {} if robot_config is None else v.mapping_of(robot_config, "robot_config")
    name = robot_config.get("type", default_type)
    if name is None:
        raise SafetyConfigError("robot_config.type", "is required (no default robot type for this request)")
    profile = load_profile(name)
    return apply_overrides(profile.config, profile.raw_obstacles, robot_config)


def parse_state(robot_state: Mapping[str, Any] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ee_position, ee_orientation); other keys (joints, proprio) are allowed and ignored here."""
    if robot_state is None:
        return None, None
    state = v.mapping_of(robot_state, "robot_state")
    pos = state.get("ee_position")
    rpy = state.get("ee_orientation")
    pos = None if pos is None else v.vector(pos, "robot_state.ee_position", 3)
    rpy = None if rpy is None else v.vector(rpy, "robot_state.ee_orientation", 3)
    return pos, rpy


def parse_stats(action_stats: Mapping[str, Any] | None, dim: int,
                tolerance: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Tolerated range [q01 - tol*(q99-q01), q99 + tol*(q99-q01)] per dimension, or (None, None)."""
    if action_stats is None:
        return None, None
    stats = v.mapping_of(action_stats, "action_stats")
    for key in ("q01", "q99"):
        if key not in stats:
            raise SafetyConfigError(f"action_stats.{key}", "is required")
    q01 = v.vector(stats["q01"], "action_stats.q01", dim)
    q99 = v.vector(stats["q99"], "action_stats.q99", dim)
    if np.any(q01 > q99):
        raise SafetyConfigError("action_stats.q01", "must be <= q99 in every dimension")
    span = (q99 - q01) * tolerance
    return q01 - span, q99 + span


@dataclasses.dataclass(frozen=True)
class Options:
    enable_classifier: bool = True
    safety_threshold: float | None = None  # overrides each alignment check's own threshold
    training_range_tolerance: float = 0.1  # fraction of (q99 - q01): q01/q99 are percentiles, not hard bounds
    mode: str | None = None


def parse_options(options: Mapping[str, Any] | None) -> Options:
    if options is None:
        return Options()
    opts = v.mapping_of(options, "options")
    v.only_keys(opts, [f.name for f in dataclasses.fields(Options)], "safety")
    out: dict[str, Any] = {}
    if opts.get("enable_classifier") is not None:
        if not isinstance(opts["enable_classifier"], bool):
            raise SafetyConfigError("safety.enable_classifier", "must be a boolean")
        out["enable_classifier"] = opts["enable_classifier"]
    if opts.get("safety_threshold") is not None:
        th = v.number(opts["safety_threshold"], "safety.safety_threshold")
        if not 0.0 <= th <= 1.0:
            raise SafetyConfigError("safety.safety_threshold", "must be within [0, 1]")
        out["safety_threshold"] = th
    if opts.get("training_range_tolerance") is not None:
        tol = v.number(opts["training_range_tolerance"], "safety.training_range_tolerance")
        if tol < 0:
            raise SafetyConfigError("safety.training_range_tolerance", "must be >= 0")
        out["training_range_tolerance"] = tol
    if opts.get("mode") is not None:
        out["mode"] = opts["mode"]
    return Options(**out)
