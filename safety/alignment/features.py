"""Numpy features of each chunk step for the example learned classifier (shared by training and inference).

Features are normalised by the robot's limits so one model serves every profile: a value of 1.0 in a speed
feature means "exactly at the cap", whatever the robot.
"""

from __future__ import annotations

import numpy as np

from safety.config import RobotConfig

FEATURE_NAMES = (
    "vx_ratio", "vy_ratio", "vz_ratio", "speed_ratio",
    "wr_ratio", "wp_ratio", "wy_ratio", "rot_speed_ratio",
    "step_bound_ratio", "gripper_pos", "has_state",
    "pos_x_box", "pos_y_box", "pos_z_box", "has_table", "z_above_table",
)


def _ratios(block: np.ndarray, hz: float, cap: float) -> np.ndarray:
    per_axis = block * hz / cap
    norm = np.sqrt(np.einsum("ij,ij->i", per_axis, per_axis))[:, None]
    return np.concatenate([per_axis, norm], axis=1)


def step_features(actions: np.ndarray, cfg: RobotConfig, positions: np.ndarray | None) -> np.ndarray:
    """(T, 7) actions and (T, 3) post-step positions (or None) -> (T, len(FEATURE_NAMES)) float32."""
    t = actions.shape[0]
    bound = np.where(actions[:, :6] > 0, cfg.step_high, -cfg.step_low)
    step_ratio = np.max(np.abs(actions[:, :6]) / bound, axis=1, keepdims=True)  # 0 where the bound is inf
    g = actions[:, cfg.gripper_index:cfg.gripper_index + 1]
    grip = 2.0 * (g - cfg.gripper_min) / (cfg.gripper_max - cfg.gripper_min) - 1.0  # -1..1 inside the range
    if positions is None:
        state = np.zeros((t, 6))
    else:
        span = cfg.ws_max - cfg.ws_min
        box = 2.0 * (positions - cfg.ws_min) / span - 1.0  # -1..1 inside the box
        has_table = cfg.table_height is not None
        floor = (cfg.table_height + cfg.collision_margin) if has_table else 0.0
        above = (positions[:, 2:3] - floor) / span[2] if has_table else np.zeros((t, 1))
        state = np.concatenate([np.ones((t, 1)), box, np.full((t, 1), float(has_table)), above], axis=1)
    feats = [_ratios(actions[:, :3], cfg.control_hz, cfg.v_trans), _ratios(actions[:, 3:6], cfg.control_hz, cfg.v_rot),
             step_ratio, grip, state]
    return np.clip(np.concatenate(feats, axis=1), -10.0, 10.0).astype(np.float32)
