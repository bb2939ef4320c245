import math

import numpy as np
import pytest

from safety import SafetyConfigError, evaluate, validate_robot_config

ACTION = [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_overrides_apply_and_keep_profile_defaults():
    cfg = validate_robot_config({
        "type": "franka_panda",
        "workspace_bounds": {"min": [0.3, -0.2, 0.05], "max": [0.6, 0.2, 0.5]},
        "velocity_limits": {"translational": 0.25, "rotational": 1.0},
        "control_frequency_hz": 10,
        "obstacles": [{"min": [0.4, -0.05, 0.0], "max": [0.5, 0.05, 0.2]}],
        "table_height": 0.02,
    })
    assert cfg.v_trans == 0.25 and cfg.control_hz == 10 and cfg.table_height == 0.02
    np.testing.assert_allclose(cfg.ws_min, [0.3, -0.2, 0.05])
    # obstacles are inflated by the profile's collision margin (0.01 m for the Panda)
    np.testing.assert_allclose(cfg.obs_min, [[0.39, -0.06, -0.01]])
    assert cfg.gripper_convention == "absolute_0_1"  # untouched profile value


@pytest.mark.parametrize(("config", "field"), [
    ({}, "robot_config.type"),
    ({"type": "widowx250"}, "robot_config.type"),
    ({"type": "ur5e", "workspace_bounds": {"min": [0, 0, 0], "max": [1, -1, 1]}}, "robot_config.workspace_bounds.min"),
    ({"type": "ur5e", "workspace_bounds": {"min": [0, 0], "max": [1, 1, 1]}}, "robot_config.workspace_bounds.min"),
    ({"type": "ur5e", "workspace_bounds": {"max": [1, 1, 1]}}, "robot_config.workspace_bounds.min"),
    ({"type": "ur5e", "workspace_bounds": {"min": [0, 0, math.nan], "max": [1, 1, 1]}},
     "robot_config.workspace_bounds.min[2]"),
    ({"type": "ur5e", "velocity_limits": {"translational": 0, "rotational": 1}},
     "robot_config.velocity_limits.translational"),
    ({"type": "ur5e", "velocity_limits": {"translational": 1, "rotational": math.inf}},
     "robot_config.velocity_limits.rotational"),
    ({"type": "ur5e", "velocity_limits": {"translational": True, "rotational": 1}},
     "robot_config.velocity_limits.translational"),
    ({"type": "ur5e", "control_frequency_hz": -5}, "robot_config.control_frequency_hz"),
    ({"type": "ur5e", "control_frequency_hz": "10"}, "robot_config.control_frequency_hz"),
    ({"type": "ur5e", "obstacles": [{"min": [0, 0, 0], "max": [0, 1, 1]}]}, "robot_config.obstacles[0].min"),
    ({"type": "ur5e", "obstacles": {"min": [0, 0, 0]}}, "robot_config.obstacles"),
    ({"type": "ur5e", "table_height": 5.0}, "robot_config.table_height"),
    ({"type": "ur5e", "workspace_bound": {}}, "robot_config.workspace_bound"),
])
def test_invalid_robot_config_names_the_field(config, field):
    with pytest.raises(SafetyConfigError) as err:
        validate_robot_config(config)
    assert err.value.field == field
    assert err.value.to_dict() == {"field": field, "message": err.value.message}


def test_suggestions_for_type_and_unknown_keys():
    with pytest.raises(SafetyConfigError, match="did you mean 'widowx_250'"):
        validate_robot_config({"type": "widowx250"})
    with pytest.raises(SafetyConfigError, match="did you mean 'workspace_bounds'"):
        validate_robot_config({"type": "ur5e", "workspace_bound": {}})


def test_default_type_used_when_config_has_none():
    assert validate_robot_config(None, default_type="widowx_250").id == "widowx_250"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"robot_state": {"ee_position": [0, 0]}}, "robot_state.ee_position"),
    ({"robot_state": {"ee_position": [0, 0, "x"]}}, "robot_state.ee_position[2]"),
    ({"robot_state": {"ee_position": [0.3, 0, 0.1], "ee_orientation": [0, math.nan, 0]}},
     "robot_state.ee_orientation[1]"),
    ({"mode": "strict"}, "mode"),
    ({"action_stats": {"q01": [0] * 7}}, "action_stats.q99"),
    ({"action_stats": {"q01": [0] * 6, "q99": [1] * 7}}, "action_stats.q01"),
    ({"action_stats": {"q01": [1] * 7, "q99": [0] * 7}}, "action_stats.q01"),
    ({"options": {"safety_threshold": 1.5}}, "safety.safety_threshold"),
    ({"options": {"enable_classifier": "yes"}}, "safety.enable_classifier"),
    ({"options": {"treshold": 0.5}}, "safety.treshold"),
])
def test_invalid_request_inputs_raise_typed_errors(kwargs, field):
    with pytest.raises(SafetyConfigError) as err:
        evaluate(ACTION, robot_config={"type": "widowx_250"}, **kwargs)
    assert err.value.field == field


def test_modify_is_an_alias_of_clamp():
    assert evaluate(ACTION, robot_config={"type": "widowx_250"}, mode="modify").mode == "clamp"
