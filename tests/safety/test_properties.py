"""Property tests of the shield (hypothesis). Random chunks are drawn from a seed for speed; the limits they
are checked against come from an independent verifier (tests/safety/helpers.py)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety import evaluate, validate_robot_config
from tests.safety.helpers import cosine, hard_limit_problems, orientation_problems

PROFILES = ["franka_panda", "franka_fr3", "widowx_250", "ur5e", "google_robot"]


def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenario(draw, with_obstacles=True):
    """(robot_config, resolved cfg, start pose inside the safe set or None, (T, 7) actions)."""
    name = draw(st.sampled_from(PROFILES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = validate_robot_config({"type": name})
    robot_config = {"type": name}
    if with_obstacles and draw(st.booleans()):
        centre = rng.uniform(base.ws_min, base.ws_max)
        half = rng.uniform(0.02, 0.15, size=3)
        robot_config["obstacles"] = [{"min": (centre - half).tolist(), "max": (centre + half).tolist()}]
    rpy = None
    if draw(st.booleans()):  # orientation bounds, and a start orientation inside them
        half_rpy = rng.uniform(0.2, 1.5, size=3)
        robot_config["workspace_bounds"] = {"min": base.ws_min.tolist(), "max": base.ws_max.tolist(),
                                            "rpy_min": (-half_rpy).tolist(), "rpy_max": half_rpy.tolist()}
        rpy = rng.uniform(-half_rpy, half_rpy)
    cfg = validate_robot_config(robot_config)
    start = None
    if draw(st.booleans()):
        start = rng.uniform(cfg.box_min, cfg.ws_max)
        inside = np.all((start > cfg.obs_min) & (start < cfg.obs_max), axis=1)
        if inside.any():
            start = None  # the robot cannot start inside an obstacle; test the stateless path instead
    t = draw(st.sampled_from([1, 1, 2, 8, 50]))
    spread = draw(st.sampled_from([0.5, 1.5, 4.0]))  # in units of "one step at the speed cap"
    actions = np.empty((t, 7))
    actions[:, :3] = rng.uniform(-spread, spread, (t, 3)) * cfg.v_trans / cfg.control_hz
    actions[:, 3:6] = rng.uniform(-spread, spread, (t, 3)) * cfg.v_rot / cfg.control_hz
    g_span = cfg.gripper_max - cfg.gripper_min
    actions[:, 6] = rng.uniform(cfg.gripper_min - 0.5 * g_span, cfg.gripper_max + 0.5 * g_span, t)
    return robot_config, cfg, None if start is None else (start, rpy), actions


def _state(start):
    if start is None:
        return None
    pos, rpy = start
    return {"ee_position": pos.tolist(), **({} if rpy is None else {"ee_orientation": rpy.tolist()})}


def _pos(start):
    return None if start is None else start[0]


def _rpy(start):
    return None if start is None else start[1]


@fast(1500)
@given(scenario())
def test_clamp_never_returns_a_violation_and_resolves_from_a_safe_start(case):
    robot_config, cfg, start, actions = case
    r = evaluate(actions, robot_config=robot_config, robot_state=_state(start), mode="clamp")
    # From a start inside the safe set every chunk can be made safe, so clamp mode never has to reject.
    assert r.decision in ("allowed", "modified"), r.violations[-1].message
    assert hard_limit_problems(r.actions, cfg, _pos(start)) == []
    assert orientation_problems(r.actions, cfg, _rpy(start)) == []
    assert r.actions.shape == actions.shape
    assert (r.decision == "modified") == bool(r.violations)


@fast(800)
@given(scenario())
def test_clamping_is_idempotent(case):
    robot_config, _, start, actions = case
    once = evaluate(actions, robot_config=robot_config, robot_state=_state(start), mode="clamp")
    twice = evaluate(once.actions, robot_config=robot_config, robot_state=_state(start), mode="clamp")
    assert twice.decision == "allowed" and not twice.modifications
    assert np.array_equal(twice.actions, once.actions)


@fast(800)
@given(scenario())
def test_reject_mode_never_returns_a_violating_action(case):
    robot_config, cfg, start, actions = case
    r = evaluate(actions, robot_config=robot_config, robot_state=_state(start), mode="reject")
    if r.decision == "allowed":
        assert hard_limit_problems(r.actions, cfg, _pos(start)) == [] and np.array_equal(r.actions, actions)
        assert orientation_problems(r.actions, cfg, _rpy(start)) == []
    else:
        assert r.decision == "rejected" and r.actions is None and r.violations
        problems = hard_limit_problems(actions, cfg, _pos(start))
        assert problems + orientation_problems(actions, cfg, _rpy(start)) != []


@fast(600)
@given(scenario(), st.sampled_from(["reject", "clamp", "monitor"]))
def test_safe_actions_pass_unchanged_in_every_mode(case, mode):
    robot_config, cfg, start, actions = case
    # Shrink the draw into the safe set: slow steps, gripper in range, and a huge box around the start.
    actions = actions.copy()
    actions[:, :6] *= 0.1  # at most 0.4 * sqrt(3) < 1 of the cap per step
    actions[:, 6] = np.clip(actions[:, 6], cfg.gripper_min, cfg.gripper_max)
    robot_config = {"type": robot_config["type"], "table_height": None,
                    "workspace_bounds": {"min": [-100.0] * 3, "max": [100.0] * 3}}
    r = evaluate(actions, robot_config=robot_config, robot_state=_state(start), mode=mode)
    assert r.decision == "allowed" and not r.violations and not r.modifications
    assert np.array_equal(r.actions, actions) and r.overall_score == 1.0


@fast(800)
@given(scenario(with_obstacles=False))
def test_speed_scaling_keeps_direction(case):
    robot_config, cfg, _, actions = case
    actions = actions.copy()
    actions[:, 6] = np.clip(actions[:, 6], cfg.gripper_min, cfg.gripper_max)
    r = evaluate(actions, robot_config=robot_config, robot_state=None, mode="clamp")
    for before, after in zip(actions, r.actions, strict=True):
        for block in (slice(0, 3), slice(3, 6)):
            b, a = before[block], after[block]
            assert np.linalg.norm(a) <= np.linalg.norm(b) * (1 + 1e-12)
            if np.linalg.norm(a) > 0:
                assert abs(cosine(a, b) - 1.0) < 1e-9


@fast(400)
@given(scenario())
def test_monitor_never_changes_the_action(case):
    robot_config, _, start, actions = case
    r = evaluate(actions, robot_config=robot_config, robot_state=_state(start), mode="monitor")
    assert r.decision == "allowed" and np.array_equal(r.actions, actions) and not r.modifications
