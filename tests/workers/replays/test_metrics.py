"""Metrics against values computed by hand, and the accumulator's merge/restore invariants."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workers.replays.metrics import ActionMetrics

ROWS = [
    {"episode": 0, "step": 0, "predicted_action": [0.1, -0.2, 0.0, 0, 0, 0, 1.0],
     "recorded_action": [0.2, -0.1, 0.5, 0, 0, 0, 1.0], "safety_decision": "pass", "safety_flags": [],
     "safety_profile": "widowx_250@1"},
    {"episode": 0, "step": 1, "predicted_action": [-0.1, 0.3, 0.2, 0, 0, 0, 0.0],
     "recorded_action": [0.1, 0.3, 0.2, 0, 0, 0, 1.0], "safety_decision": "clamp", "safety_flags": ["workspace"],
     "safety_profile": "widowx_250@1"},
    {"episode": 1, "step": 0, "predicted_action": None, "recorded_action": [0, 0, 0, 0, 0, 0, 1.0],
     "safety_decision": "reject", "safety_flags": ["velocity", "workspace"], "safety_profile": "widowx_250@1"},
]


def test_hand_computed_values() -> None:
    s = ActionMetrics.from_rows(ROWS).summary()
    assert (s["steps"], s["compared_steps"], s["missing_predictions"]) == (3, 2, 1)
    mse = [d["mse"] for d in s["per_dim"]]
    mae = [d["mae"] for d in s["per_dim"]]
    # dim 0 errors -0.1, -0.2; dim 1 -0.1, 0; dim 2 -0.5, 0; dims 3-5 none; gripper 0, -1
    np.testing.assert_allclose(mse, [0.025, 0.005, 0.125, 0, 0, 0, 0.5], atol=1e-12)
    np.testing.assert_allclose(mae, [0.15, 0.05, 0.25, 0, 0, 0, 0.5], atol=1e-12)
    assert s["mse"] == pytest.approx(1.31 / 14)
    assert s["mae"] == pytest.approx(1.9 / 14)
    # dim 0: (+,+) agree, (-,+) not; dim 1 both agree; dim 2: predicted 0.0 is "no motion" vs +0.5
    assert s["sign_agreement"] == pytest.approx({"0": 0.5, "1": 1.0, "2": 0.5})
    assert s["sign_agreement_mean"] == pytest.approx(2 / 3)
    assert s["gripper_agreement"] == 0.5
    assert s["safety"] == {"judged_steps": 3, "unjudged_steps": 0, "profiles": {"widowx_250@1": 3},
                           "flagged_steps": 2, "modified": 1, "rejected": 1, "violations": 3,
                           "by_flag": {"workspace": 2, "velocity": 1}}


def test_unjudged_steps_are_never_counted_clean() -> None:
    """Issue 21: rows without a safety decision read 'violations: 0'; now the counts say they are unknown."""
    rows = [{**r, "safety_decision": None, "safety_flags": [], "safety_profile": None} for r in ROWS]
    safety = ActionMetrics.from_rows(rows).summary()["safety"]
    assert safety["judged_steps"] == 0 and safety["unjudged_steps"] == 3
    assert safety["violations"] is None and safety["flagged_steps"] is None and safety["rejected"] is None
    mixed = ActionMetrics.from_rows(rows[:1] + ROWS[1:]).summary()["safety"]
    assert (mixed["judged_steps"], mixed["unjudged_steps"], mixed["violations"]) == (2, 1, 3)


def test_gripper_threshold_for_symmetric_grippers() -> None:
    acc = ActionMetrics(gripper_threshold=0.0)
    acc.update([0] * 6 + [-0.8], [0] * 6 + [-1.0])
    acc.update([0] * 6 + [0.3], [0] * 6 + [-1.0])
    assert acc.summary()["gripper_agreement"] == 0.5


def test_merge_equals_one_pass_and_state_round_trips() -> None:
    rng = np.random.default_rng(1)
    rows = [{"episode": i // 10, "step": i % 10, "predicted_action": rng.normal(size=7).tolist(),
             "recorded_action": rng.normal(size=7).tolist(), "safety_decision": "pass",
             "safety_flags": ["x"] if i % 7 == 0 else []} for i in range(40)]
    whole = ActionMetrics.from_rows(rows).summary()
    merged = ActionMetrics.from_rows(rows[:13]).merge(ActionMetrics.from_rows(rows[13:]))
    assert_close(merged.summary(), whole)
    restored = ActionMetrics.from_state(json.loads(json.dumps(merged.to_state())))
    assert_close(restored.summary(), whole)
    assert whole["safety"]["by_flag"] == {"x": 6}


def assert_close(a: object, b: object) -> None:
    """Equal up to float rounding (sums added in another order), recursively."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9)
    else:
        assert a == b


def test_dimension_mismatch_compares_the_common_prefix() -> None:
    acc = ActionMetrics()
    acc.update([1.0, 1.0], [0.0, 0.0, 5.0])
    s = acc.summary()
    assert s["dim_mismatches"] == 1
    assert [d["mse"] for d in s["per_dim"]] == [1.0, 1.0]
    assert s["gripper_agreement"] is None and "2" not in s["sign_agreement"]


def test_empty_accumulator() -> None:
    s = ActionMetrics().summary()
    assert s["steps"] == 0 and s["mse"] is None and s["per_dim"] == [] and s["gripper_agreement"] is None


def test_metrics_compare_the_raw_prediction_even_when_safety_rejected_it() -> None:
    rows = [
        {"episode": 0, "step": 0, "predicted_action": None, "raw_action": [0.1] * 7, "recorded_action": [0.1] * 7,
         "safety_decision": "rejected", "safety_flags": ["workspace"]},
        {"episode": 0, "step": 1, "predicted_action": [0.05] * 7, "raw_action": [0.3] * 7,
         "recorded_action": [0.3] * 7, "safety_decision": "modified", "safety_flags": ["velocity"]},
        {"episode": 0, "step": 2, "predicted_action": None, "raw_action": None, "recorded_action": [0.0] * 7},
    ]
    summary = ActionMetrics.from_rows(rows).summary()
    assert summary["compared_on"] == "raw_prediction"
    assert summary["compared_steps"] == 2 and summary["missing_predictions"] == 1
    assert summary["mse"] == 0.0  # the model matched the record; the safety stage's edits are counted apart
    assert summary["safety"] == {"judged_steps": 2, "unjudged_steps": 1, "profiles": {"unknown": 2},
                                 "flagged_steps": 2, "modified": 1, "rejected": 1, "violations": 2,
                                 "by_flag": {"workspace": 1, "velocity": 1}}
