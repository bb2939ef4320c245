"""Clamp mode: project a chunk onto the safe set, step by step, and re-derive the deltas.

Order per step (robot-limits.md section 7): clamp the integrated target into the workspace box (with the table
plane folded in), re-derive the delta from the previous *clamped* pose, then scale that delta uniformly to the
speed caps so its direction is kept, then shorten it so the step stops at the boundary of any (inflated)
obstacle. Because the box is convex and the previous pose lies in it, every point on the shortened segment
lies in it too, so scaling never undoes the box clamp. Without a robot_state only the scaling applies, and it
is vectorised. The shield re-runs every rule check on the output and rejects if anything is still violated
(e.g. the robot starts outside the box), so clamp mode never returns an unsafe step.
"""

from __future__ import annotations

import math

import numpy as np

from safety.checks import Inputs
from safety.config import RobotConfig
from safety.constants import ABS_TOL
from safety.result import Modification


def _axis_factor(d: float, low: float, high: float) -> float:
    if d > high:
        return high / d
    if d < low:
        return low / d
    return 1.0


def _step_factor(delta: list[float], cap_per_step: float, low: np.ndarray, high: np.ndarray) -> float:
    """Largest s in (0, 1] with s*delta inside the norm cap and the per-axis step bounds."""
    norm = math.sqrt(sum(x * x for x in delta))
    s = cap_per_step / norm if norm > cap_per_step else 1.0
    for i, d in enumerate(delta):
        s = min(s, _axis_factor(d, float(low[i]), float(high[i])))
    return s


def _scale_all(block: np.ndarray, cap_per_step: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Vectorised uniform scale factors, one per step, for the stateless case."""
    norm = np.sqrt(np.einsum("ij,ij->i", block, block))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(norm > cap_per_step, cap_per_step / norm, 1.0)
        per_axis = np.where(block > high, high / block, np.where(block < low, low / block, 1.0))
    return np.minimum(f, per_axis.min(axis=1))


def _entry_fraction(start: list[float], delta: list[float], lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of the segment start -> start+delta before it enters the open box (lo, hi); 1.0 if it doesn't."""
    t_in, t_out = -math.inf, math.inf
    for a, v, lo_i, hi_i in zip(start, delta, lo, hi, strict=True):
        if v == 0.0:
            if not lo_i < a < hi_i:
                return 1.0
            continue
        t1, t2 = (lo_i - a) / v, (hi_i - a) / v
        t_in, t_out = max(t_in, min(t1, t2)), min(t_out, max(t1, t2))
    if t_in >= t_out or t_in >= 1.0 or t_out <= 0.0:
        return 1.0  # the segment misses the box
    if t_in < 0.0:
        # Starting on the boundary (a previous step stopped there; float error puts it a hair either side)
        # means no move inwards at all. Starting truly inside is left to the final verification to reject.
        inside = all(lo_i + ABS_TOL < a < hi_i - ABS_TOL for a, lo_i, hi_i in zip(start, lo, hi, strict=True))
        return 1.0 if inside else 0.0
    return t_in


def _project_block(deltas: np.ndarray, start: np.ndarray, box_lo: np.ndarray, box_hi: np.ndarray,
                   cap_per_step: float, low: np.ndarray, high: np.ndarray,
                   obstacles: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, list[str]]:
    """Sequential projection of one 3-D block (translation or rotation): new deltas and, per step, which
    constraints changed it (e.g. "workspace+velocity")."""
    out, causes = np.empty_like(deltas), []
    pose = [float(x) for x in start]
    lo_l, hi_l = box_lo.tolist(), box_hi.tolist()
    for t, row in enumerate(deltas.tolist()):
        # Keep an in-bounds component bit-exact ((p + d) - p != d in floating point).
        step = [d if lo_i <= p + d <= hi_i else min(max(p + d, lo_i), hi_i) - p
                for p, d, lo_i, hi_i in zip(pose, row, lo_l, hi_l, strict=True)]
        s = _step_factor(step, cap_per_step, low, high)
        cause = [c for c, hit in (("workspace", step != row), ("velocity", s < 1.0)) if hit]
        if obstacles is not None:
            s_free = s
            for o_lo, o_hi in zip(*obstacles, strict=True):
                s *= _entry_fraction(pose, [s * x for x in step], o_lo, o_hi)
            cause += ["collision"] if s < s_free else []
        causes.append("+".join(cause))
        step = [s * x for x in step]
        out[t] = step
        pose = [p + x for p, x in zip(pose, step, strict=True)]
    return out, causes


def _record(mods: list[Modification], checks: str | list[str], method: str, before: np.ndarray,
            after: np.ndarray, dims: list[int], limit: float | None) -> None:
    changed = np.flatnonzero(np.any(before != after, axis=1))
    for t in changed.tolist():
        b, a = before[t], after[t]
        check = checks if isinstance(checks, str) else checks[t]
        how = "scale" if method == "project" and "workspace" not in check else method
        nb = float(np.linalg.norm(b))
        factor = float(np.linalg.norm(a)) / nb if how == "scale" and nb > 0 else None
        mods.append(Modification(check, how, t, dims, b.tolist(), a.tolist(), factor, limit))


def _block(a: np.ndarray, inp: Inputs, cols: slice, start: np.ndarray | None, box: tuple | None,
           cap: float, obstacles: tuple | None, mods: list[Modification]) -> None:
    cfg: RobotConfig = inp.cfg
    before = a[:, cols].copy()
    low, high = cfg.step_low[cols], cfg.step_high[cols]
    cap_step = cap / cfg.control_hz
    dims = list(range(cols.start, cols.stop))
    if start is None or box is None:
        a[:, cols] = before * _scale_all(before, cap_step, low, high)[:, None]
        _record(mods, "velocity", "scale", before, a[:, cols], dims, cap)
        return
    a[:, cols], causes = _project_block(before, start, box[0], box[1], cap_step, low, high, obstacles)
    _record(mods, causes, "project", before, a[:, cols], dims, cap)


def clamp(inp: Inputs) -> tuple[np.ndarray, list[Modification]]:
    """Return the projected (T, 7) actions and one Modification per changed step and block."""
    cfg, a, mods = inp.cfg, inp.actions.copy(), []
    g = cfg.gripper_index
    before = a[:, g:g + 1].copy()
    a[:, g] = np.clip(a[:, g], cfg.gripper_min, cfg.gripper_max)
    _record(mods, "gripper_range", "clamp", before, a[:, g:g + 1], [g], None)
    obstacles = (cfg.obs_min, cfg.obs_max) if len(cfg.obs_min) else None
    _block(a, inp, slice(0, 3), inp.position, (cfg.box_min, cfg.ws_max), cfg.v_trans, obstacles, mods)
    rpy_box = (cfg.rpy_min, cfg.rpy_max) if cfg.rpy_min is not None else None
    _block(a, inp, slice(3, 6), inp.orientation if rpy_box else None, rpy_box, cfg.v_rot, None, mods)
    return a, mods
