"""An independent verifier of the hard limits, written plainly (not via safety.checks) for the property tests."""

from __future__ import annotations

import numpy as np

from safety.config import RobotConfig

TOL = 1e-7


def orientation_problems(actions: np.ndarray, cfg: RobotConfig, start_rpy: np.ndarray | None) -> list[str]:
    if start_rpy is None or cfg.rpy_min is None:
        return []
    rpy, problems = np.array(start_rpy, dtype=float), []
    for t, row in enumerate(np.asarray(actions, dtype=float)):
        rpy = rpy + row[3:6]
        if np.any(rpy < cfg.rpy_min - TOL) or np.any(rpy > cfg.rpy_max + TOL):
            problems.append(f"orientation at step {t}: {rpy}")
    return problems


def hard_limit_problems(actions: np.ndarray, cfg: RobotConfig, start: np.ndarray | None) -> list[str]:
    problems = []
    a = np.asarray(actions, dtype=float)
    hz = cfg.control_hz
    for t, row in enumerate(a):
        if np.linalg.norm(row[:3]) * hz > cfg.v_trans * (1 + 1e-6) + TOL:
            problems.append(f"translational speed at step {t}")
        if np.linalg.norm(row[3:6]) * hz > cfg.v_rot * (1 + 1e-6) + TOL:
            problems.append(f"rotational speed at step {t}")
        for i in range(6):
            if not cfg.step_low[i] * (1 + 1e-6) - TOL <= row[i] <= cfg.step_high[i] * (1 + 1e-6) + TOL:
                problems.append(f"step bound dim {i} at step {t}")
        if not cfg.gripper_min - TOL <= row[6] <= cfg.gripper_max + TOL:
            problems.append(f"gripper at step {t}")
    if start is None:
        return problems
    pos = np.array(start, dtype=float)
    for t, row in enumerate(a):
        pos = pos + row[:3]
        if np.any(pos < cfg.ws_min - TOL) or np.any(pos > cfg.ws_max + TOL):
            problems.append(f"workspace at step {t}: {pos}")
        if cfg.table_height is not None and pos[2] < cfg.table_height + cfg.collision_margin - TOL:
            problems.append(f"table at step {t}")
        for k, (lo, hi) in enumerate(zip(cfg.obs_min, cfg.obs_max, strict=True)):
            if np.all(pos > lo + TOL) and np.all(pos < hi - TOL):
                problems.append(f"obstacle {k} at step {t}")
    return problems


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
