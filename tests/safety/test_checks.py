"""Unit tests for each rule check and for the three modes, through the public evaluate()."""

import json

import numpy as np
import pytest

from safety import ADVISORY, evaluate

WIDOWX = {"type": "widowx_250"}
STATE = {"ee_position": [0.3, 0.0, 0.15]}
SAFE = [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def _status(result, name):
    return next(c.status for c in result.checks if c.name == name)


def _codes(result):
    return {v.code for v in result.violations}


def test_safe_action_is_allowed_and_dict_has_the_spec_keys():
    r = evaluate(SAFE, robot_config=WIDOWX, robot_state=STATE, mode="reject")
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["decision"] == "allowed" and d["actions"] == [SAFE] and d["flags"] == []
    assert set(d) >= {"overall_score", "checks_passed", "flags", "classifier_confidence", "modifications_applied",
                      "decision", "mode", "actions", "original_actions", "violations", "checks", "robot_profile",
                      "safety_version", "latency_ms", "advisory"}
    assert d["overall_score"] == 1.0 and d["advisory"] == ADVISORY
    assert d["robot_profile"] == {"id": "widowx_250", "version": "2026-11", "control_hz": 5.0}
    assert {"velocity", "workspace", "collision", "gripper_range"} <= set(d["checks_passed"])
    assert all(set(c) >= {"name", "type", "status", "latency_ms", "version"} for c in d["checks"])


def test_workspace_is_skipped_not_passed_without_state():
    r = evaluate(SAFE, robot_config=WIDOWX, mode="reject")
    assert _status(r, "workspace") == "skipped" and _status(r, "collision") == "skipped"
    assert "workspace" not in r.to_dict()["checks_passed"]
    assert r.decision == "allowed"


def test_workspace_accumulates_over_chunk_steps():
    chunk = np.tile([0.04, 0, 0, 0, 0, 0, 1.0], (5, 1))  # each step fine, the 5th pose is x = 0.5 + ... > 0.5
    r = evaluate(chunk, robot_config=WIDOWX, robot_state={"ee_position": [0.31, 0.0, 0.15]}, mode="reject")
    ws = [v for v in r.violations if v.code == "WORKSPACE_X_MAX"]
    assert [v.step_index for v in ws] == [4] and ws[0].measured == pytest.approx(0.51)
    assert r.decision == "rejected" and r.actions is None


def test_orientation_bounds_use_ee_orientation():
    cfg = dict(WIDOWX, workspace_bounds={"min": [0.1, -0.3, 0.0], "max": [0.5, 0.3, 0.4],
                                          "rpy_min": [-1, -1, -1], "rpy_max": [1, 1, 1]})
    act = [0, 0, 0, 0.2, 0, 0, 1.0]
    r = evaluate(act, robot_config=cfg, robot_state={**STATE, "ee_orientation": [0.9, 0, 0]}, mode="reject")
    assert _codes(r) == {"ORIENTATION_ROLL_MAX"}
    r = evaluate(act, robot_config=cfg, robot_state=STATE, mode="reject")  # no orientation: cannot tell
    assert r.decision == "allowed"
    assert "ee_orientation" in next(c for c in r.checks if c.name == "workspace").detail["reason"]


def test_velocity_norm_and_axis_limits():
    # 0.04 m on x and y: each axis within 0.05/step, but the norm 0.0566 m * 5 Hz = 0.28 m/s > 0.25
    r = evaluate([0.04, 0.04, 0, 0, 0, 0, 1.0], robot_config=WIDOWX, mode="reject")
    assert _codes(r) == {"TRANSLATIONAL_SPEED"}
    v = r.violations[0]
    assert v.measured == pytest.approx(np.hypot(0.04, 0.04) * 5) and v.limit == 0.25 and v.dims == [0, 1, 2]
    # with a looser norm cap the per-axis step bound (0.05 m/step) still applies
    cfg = dict(WIDOWX, velocity_limits={"translational": 1.0, "rotational": 1.57})
    r = evaluate([0.06, 0, 0, 0, 0, 0, 1.0], robot_config=cfg, mode="reject")
    assert _codes(r) == {"AXIS_VELOCITY_X"} and r.violations[0].dims == [0]


def test_rotational_speed():
    r = evaluate([0, 0, 0, 0, 0, 0.4, 1.0], robot_config=WIDOWX, mode="reject")  # 0.4 rad * 5 Hz = 2 rad/s
    assert "ROTATIONAL_SPEED" in _codes(r) and "AXIS_VELOCITY_YAW" in _codes(r)


def test_velocity_uses_the_configured_control_rate():
    act = [0.04, 0, 0, 0, 0, 0, 1.0]
    fast = dict(WIDOWX, control_frequency_hz=10)  # 0.04 m in 0.1 s = 0.4 m/s
    assert evaluate(act, robot_config=WIDOWX, mode="reject").decision == "allowed"
    assert evaluate(act, robot_config=fast, mode="reject").decision == "rejected"


def test_table_plane_with_margin():
    cfg = dict(WIDOWX, table_height=0.1)  # margin 0.01: z must stay >= 0.11
    r = evaluate([0, 0, -0.045, 0, 0, 0, 1.0], robot_config=cfg, robot_state=STATE, mode="reject")
    assert _codes(r) == {"BELOW_TABLE"} and r.violations[0].limit == pytest.approx(0.11)
    r = evaluate([0, 0, -0.035, 0, 0, 0, 1.0], robot_config=cfg, robot_state=STATE, mode="reject")
    assert r.decision == "allowed"


def test_obstacle_with_margin():
    cfg = dict(WIDOWX, obstacles=[{"min": [0.34, -0.05, 0.0], "max": [0.4, 0.05, 0.3]}])
    # x = 0.335 is outside the box but inside its 0.01 m margin
    r = evaluate([0.035, 0, 0, 0, 0, 0, 1.0], robot_config=cfg, robot_state=STATE, mode="reject")
    assert _codes(r) == {"OBSTACLE"}
    r = evaluate([0.025, 0, 0, 0, 0, 0, 1.0], robot_config=cfg, robot_state=STATE, mode="reject")
    assert r.decision == "allowed"


@pytest.mark.parametrize("mode", ["reject", "clamp", "monitor"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_rejected_in_every_mode(mode, bad):
    act = [0.01, bad, 0, 0, 0, 0, 1.0]
    r = evaluate(act, robot_config=WIDOWX, robot_state=STATE, mode=mode)
    assert r.decision == "rejected" and r.actions is None and _codes(r) == {"NON_FINITE"}
    assert r.violations[0].dims == [1] and r.overall_score == 0.0
    assert _status(r, "velocity") == "skipped"
    json.dumps(r.to_dict(), allow_nan=False)  # NaN is reported as null, not as invalid JSON


@pytest.mark.parametrize("actions", [[0.0] * 6, [[0.0] * 8], np.zeros((2, 3, 7)), [], "abc", np.zeros((0, 7))])
def test_wrong_dimensions_are_rejected(actions):
    r = evaluate(actions, robot_config=WIDOWX, mode="monitor")
    assert r.decision == "rejected" and _codes(r) == {"ACTION_SHAPE"}


def test_training_range_with_tolerance():
    stats = {"q01": [-0.02] * 6 + [0.0], "q99": [0.02] * 6 + [1.0]}
    r = evaluate([0.03, 0, 0, 0, 0, 0, 1.0], robot_config=WIDOWX, action_stats=stats, mode="clamp")
    assert _codes(r) == {"ABOVE_TRAINING_RANGE_DIM0"} and r.decision == "rejected"  # cannot be clamped away
    r = evaluate([0.023, 0, 0, 0, 0, 0, 1.0], robot_config=WIDOWX, action_stats=stats, mode="reject")
    assert r.decision == "allowed"  # within 10 % of the q01..q99 span
    r = evaluate([0.023, 0, 0, 0, 0, 0, 1.0], robot_config=WIDOWX, action_stats=stats, mode="reject",
                 options={"training_range_tolerance": 0.0})
    assert r.decision == "rejected"
    assert _status(evaluate(SAFE, robot_config=WIDOWX), "training_range") == "skipped"


def test_gripper_range_per_convention():
    r = evaluate([0, 0, 0, 0, 0, 0, -0.5], robot_config=WIDOWX, mode="reject")
    assert _codes(r) == {"GRIPPER_RANGE_MIN"} and r.violations[0].dims == [6]
    assert evaluate([0, 0, 0, 0, 0, 0, -0.5], robot_config={"type": "google_robot"}, mode="reject").decision == \
        "allowed"


def test_monitor_flags_but_returns_the_action_unchanged():
    act = [0.2, 0, 0, 0, 0, 0, 1.5]
    r = evaluate(act, robot_config=WIDOWX, robot_state=STATE, mode="monitor")
    assert r.decision == "allowed" and r.actions.tolist() == [act] and not r.modifications
    assert {"TRANSLATIONAL_SPEED", "GRIPPER_RANGE_MAX"} <= set(r.flags) and r.overall_score < 1.0


def test_clamp_scales_speed_keeping_direction_and_reports_before_after():
    r = evaluate([0.09, 0.12, 0, 0, 0, 0, 1.0], robot_config=dict(WIDOWX, velocity_limits={
        "translational": 0.25, "rotational": 1.57}), mode="clamp")
    assert r.decision == "modified"
    out = r.actions[0, :3]
    # norm 0.15 m/step against the 0.05 m/step cap -> factor 1/3 on every axis (per-axis 0.05 is then met)
    np.testing.assert_allclose(out, [0.03, 0.04, 0.0])
    (mod,) = r.modifications
    assert mod.method == "scale" and mod.before == [0.09, 0.12, 0.0] and mod.factor == pytest.approx(1 / 3)
    assert r.to_dict()["original_actions"] == [[0.09, 0.12, 0, 0, 0, 0, 1.0]]


def test_clamp_projects_onto_workspace_and_above_table():
    state = {"ee_position": [0.3, 0.0, 0.03]}
    r = evaluate([0, 0, -0.04, 0, 0, 0, 1.0], robot_config=WIDOWX, robot_state=state, mode="clamp")
    assert r.decision == "modified"
    assert 0.03 + r.actions[0, 2] == pytest.approx(0.01)  # table 0.0 + margin 0.01


def test_clamp_stops_at_an_obstacle():
    cfg = dict(WIDOWX, obstacles=[{"min": [0.33, -0.1, 0.0], "max": [0.4, 0.1, 0.3]}])
    r = evaluate([0.04, 0, 0, 0, 0, 0, 1.0], robot_config=cfg, robot_state=STATE, mode="clamp")
    assert r.decision == "modified" and 0.3 + r.actions[0, 0] == pytest.approx(0.32)  # 0.33 - 0.01 margin
    assert r.modifications[0].check == "collision"


def test_clamp_rejects_what_it_cannot_fix():
    far = {"ee_position": [0.9, 0.0, 0.15]}  # starts 0.4 m outside the box; one step moves at most 0.05 m
    r = evaluate([0, 0, 0, 0, 0, 0, 1.0], robot_config=WIDOWX, robot_state=far, mode="clamp")
    assert r.decision == "rejected" and "CLAMP_UNRESOLVED" in r.flags


def test_profile_default_mode_applies():
    assert evaluate(SAFE, robot_config={"type": "franka_panda"}).mode == "reject"
    assert evaluate(SAFE, robot_config=WIDOWX).mode == "clamp"
    assert evaluate(SAFE, robot_config=WIDOWX, options={"mode": "monitor"}).mode == "monitor"


def test_clamp_projects_orientation_into_rpy_bounds():
    cfg = dict(WIDOWX, workspace_bounds={"min": [0.1, -0.3, 0.0], "max": [0.5, 0.3, 0.4],
                                          "rpy_min": [-1, -1, -1], "rpy_max": [1, 1, 1]})
    state = {**STATE, "ee_orientation": [0.95, 0, 0]}
    r = evaluate([0, 0, 0, 0.2, 0, 0, 1.0], robot_config=cfg, robot_state=state, mode="clamp")
    assert r.decision == "modified" and 0.95 + r.actions[0, 3] == pytest.approx(1.0)
    assert r.modifications[0].dims == [3, 4, 5] and r.modifications[0].method == "project"
