"""Vectorised rule checks over every step of a (T, 7) chunk (T = 1 for a single action).

Steps accumulate from the robot's state: the pose after step t is state + sum of deltas 0..t. All checks
are numpy expressions over the whole chunk; there is no per-step Python loop on this path.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from safety.config import RobotConfig
from safety.constants import ABS_TOL, REL_TOL
from safety.result import CheckRecord, Violation

AXES = ("X", "Y", "Z")
ANGLES = ("ROLL", "PITCH", "YAW")
MAX_VIOLATIONS_PER_CHECK = 64  # keeps a wildly wrong 1000-step chunk from producing a huge response


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    actions: np.ndarray  # (T, 7) float64, finite (shape/finite are checked before these run)
    cfg: RobotConfig
    position: np.ndarray | None  # (3,) ee position at t=0, or None without a robot_state
    orientation: np.ndarray | None  # (3,) rpy at t=0
    q_low: np.ndarray | None  # (D,) lowest tolerated value (q01 minus tolerance), or None
    q_high: np.ndarray | None

    def positions(self) -> np.ndarray:
        return self.position + np.cumsum(self.actions[:, :3], axis=0)

    def orientations(self) -> np.ndarray:
        return self.orientation + np.cumsum(self.actions[:, 3:6], axis=0)


CheckResult = tuple[str, list[Violation], dict | None]  # status, violations, detail


def _emit(check: str, mask: np.ndarray, measured: np.ndarray, limit: np.ndarray, codes: list[str],
          unit: str, dims: list[int]) -> list[Violation]:
    """One Violation per True cell of a (T, K) mask; column k carries codes[k] and action dimension dims[k]."""
    if not mask.any():  # the common, safe case: skip the per-cell bookkeeping
        return []
    out = []
    steps, cols = np.nonzero(mask)
    limit = np.broadcast_to(limit, mask.shape)
    for t, k in zip(steps[:MAX_VIOLATIONS_PER_CHECK], cols[:MAX_VIOLATIONS_PER_CHECK], strict=True):
        m, lim = float(measured[t, k]), float(limit[t, k])
        u = f" {unit}" if unit else ""
        out.append(Violation(check, codes[k], f"step {t}: {codes[k]} measured {m:.4g}{u}, limit {lim:.4g}{u}",
                             m, lim, int(t), [dims[k]]))
    return out


def _outside(check: str, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str], unit: str,
             dims: list[int]) -> list[Violation]:
    """Values below lo or above hi (with float slack), coded <NAME>_MIN / <NAME>_MAX."""
    out = _emit(check, values < lo - ABS_TOL, values, lo, [f"{n}_MIN" for n in names], unit, dims)
    return out + _emit(check, values > hi + ABS_TOL, values, hi, [f"{n}_MAX" for n in names], unit, dims)


def check_gripper(inp: Inputs) -> CheckResult:
    cfg = inp.cfg
    g = inp.actions[:, cfg.gripper_index:cfg.gripper_index + 1]
    out = _outside("gripper_range", g, np.array([cfg.gripper_min]), np.array([cfg.gripper_max]), ["GRIPPER_RANGE"],
                   "", [cfg.gripper_index])
    return ("failed" if out else "passed"), out, None


def check_training_range(inp: Inputs) -> CheckResult:
    if inp.q_low is None:
        return "skipped", [], {"reason": "no action_stats (q01/q99) given"}
    a = inp.actions
    idx = list(range(a.shape[1]))
    dims = [f"DIM{i}" for i in idx]
    low = _emit("training_range", a < inp.q_low, a, inp.q_low, [f"BELOW_TRAINING_RANGE_{d}" for d in dims], "", idx)
    high = _emit("training_range", a > inp.q_high, a, inp.q_high, [f"ABOVE_TRAINING_RANGE_{d}" for d in dims], "", idx)
    return ("failed" if low or high else "passed"), low + high, None


def _speed_violations(deltas: np.ndarray, hz: float, cap: float, low: np.ndarray, high: np.ndarray,
                      dims: list[int], norm_code: str, axis_names: tuple[str, ...], unit: str) -> list[Violation]:
    speed = np.sqrt(np.einsum("ij,ij->i", deltas, deltas))[:, None] * hz
    out = _emit("velocity", speed > cap * (1 + REL_TOL) + ABS_TOL, speed, np.array(cap), [norm_code], unit, [dims[0]])
    for v in out:
        v.dims = list(dims)  # the norm involves all three dimensions
    # Per-axis step bounds from the action spec (e.g. Bridge's +/-0.05 m per step), as velocities.
    over = (deltas > high * (1 + REL_TOL) + ABS_TOL) | (deltas < low * (1 + REL_TOL) - ABS_TOL)
    bound = np.where(deltas > 0, high, -low) * hz
    out += _emit("velocity", over, np.abs(deltas) * hz, bound, [f"AXIS_VELOCITY_{n}" for n in axis_names], unit,
                 dims)
    return out


def check_velocity(inp: Inputs) -> CheckResult:
    cfg, a = inp.cfg, inp.actions
    out = _speed_violations(a[:, :3], cfg.control_hz, cfg.v_trans, cfg.step_low[:3], cfg.step_high[:3],
                            [0, 1, 2], "TRANSLATIONAL_SPEED", AXES, "m/s")
    out += _speed_violations(a[:, 3:6], cfg.control_hz, cfg.v_rot, cfg.step_low[3:], cfg.step_high[3:],
                             [3, 4, 5], "ROTATIONAL_SPEED", ANGLES, "rad/s")
    return ("failed" if out else "passed"), out, None


def check_workspace(inp: Inputs) -> CheckResult:
    if inp.position is None:
        return "skipped", [], {"reason": "no robot_state.ee_position: the pose after each step is unknown"}
    cfg, pos = inp.cfg, inp.positions()
    out = _outside("workspace", pos, cfg.ws_min, cfg.ws_max, [f"WORKSPACE_{n}" for n in AXES], "m", [0, 1, 2])
    detail = None
    if cfg.rpy_min is not None and inp.orientation is not None:
        rpy = inp.orientations()
        out += _outside("workspace", rpy, cfg.rpy_min, cfg.rpy_max, [f"ORIENTATION_{n}" for n in ANGLES], "rad",
                        [3, 4, 5])
    elif cfg.rpy_min is not None:
        detail = {"reason": "orientation bounds not checked: no robot_state.ee_orientation"}
    return ("failed" if out else "passed"), out, detail


def check_collision(inp: Inputs) -> CheckResult:
    cfg = inp.cfg
    if inp.position is None:
        return "skipped", [], {"reason": "no robot_state.ee_position"}
    if cfg.table_height is None and len(cfg.obs_min) == 0:
        return "skipped", [], {"reason": "no table plane or obstacles configured"}
    pos, out = inp.positions(), []
    if cfg.table_height is not None:
        floor = cfg.table_height + cfg.collision_margin
        z = pos[:, 2:3]
        out += _emit("collision", z < floor - ABS_TOL, z, np.array(floor), ["BELOW_TABLE"], "m", [2])
    if len(cfg.obs_min):
        # (T, K): strictly inside an inflated box; the boundary counts as outside so a projected point passes.
        inside = np.all((pos[:, None, :] > cfg.obs_min + ABS_TOL) & (pos[:, None, :] < cfg.obs_max - ABS_TOL), axis=2)
        for t, k in zip(*np.nonzero(inside), strict=True):
            out.append(Violation("collision", "OBSTACLE", f"step {t}: position inside obstacle {k} (with margin)",
                                 None, None, int(t), [0, 1, 2]))
    return ("failed" if out else "passed"), out, None


RULE_CHECKS: tuple[tuple[str, Callable[[Inputs], CheckResult]], ...] = (
    ("gripper_range", check_gripper),
    ("training_range", check_training_range),
    ("velocity", check_velocity),
    ("workspace", check_workspace),
    ("collision", check_collision),
)


def run_rule_checks(inp: Inputs, names: tuple[str, ...] | None = None) -> tuple[list[CheckRecord], list[Violation]]:
    """Run all rule checks (or only `names`), timing each one."""
    records, violations = [], []
    for name, fn in RULE_CHECKS:
        if names is not None and name not in names:
            continue
        t0 = time.perf_counter()
        status, found, detail = fn(inp)
        records.append(CheckRecord(name, "rule", status, (time.perf_counter() - t0) * 1e3, detail=detail))
        violations += found
    return records, violations
