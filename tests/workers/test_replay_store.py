"""Replay bookkeeping against real PostgreSQL: slice claims, duplicate-proof step counts, camera mapping."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import Future
from datetime import timedelta

import numpy as np
import pytest

from web.accounts import service
from workers.gpu.items import ItemTrace
from workers.policies.base import PolicyResult
from workers.replays import Step
from workers.stages.replay_steps import map_cameras, resolve_robot, robot_state, step_row
from workers.store import replays as store
from workers.store.db import session_scope
from workers.store.models import Replay


@pytest.fixture()
def replay_id(settings) -> str:
    with session_scope(settings.database_url) as s:
        customer = service.create_customer(s, f"cust-{uuid.uuid4().hex[:10]}", "free")
        replay = Replay(customer_id=customer.id, model="openvla-tiny", dataset={"path": "x"}, options={},
                        total_steps=4, request_id="req_test")
        s.add(replay)
        s.flush()
        return str(replay.id)


def _row(episode: int, step: int) -> dict:
    return {"episode": episode, "step": step, "predicted_action": [0.0] * 7, "raw_action": [0.0] * 7,
            "recorded_action": [0.1] * 7, "safety_decision": "allowed", "safety_flags": [], "latency_ms": 1.0,
            "error": None}


def test_claims_run_hand_on_relay_and_drop(settings, replay_id):
    url = settings.database_url
    with session_scope(url) as s:
        assert store.claim_slice(s, replay_id, 0, grace_s=10)[0] == "run"
        assert store.hand_on(s, replay_id, 0) and not store.hand_on(s, replay_id, 0)  # only one slice hands on
    with session_scope(url) as s:
        # Slice 0's message coming back at once is a duplicate; once the grace has passed, the next message
        # may have been lost with a worker that died mid hand-off, so it is published again.
        assert store.claim_slice(s, replay_id, 0, grace_s=10)[0] == "drop"
        s.get(Replay, uuid.UUID(replay_id)).handed_at -= timedelta(seconds=11)
    with session_scope(url) as s:
        assert store.claim_slice(s, replay_id, 0, grace_s=10)[0] == "relay"
        assert store.claim_slice(s, replay_id, 1, grace_s=10)[0] == "run"
        store.hand_on(s, replay_id, 1)
    with session_scope(url) as s:
        assert store.claim_slice(s, replay_id, 0, grace_s=0)[0] == "drop"  # two behind: stale
        assert store.write_window(s, replay_id, 2, []) and not store.write_window(s, replay_id, 1, [])


def test_steps_written_twice_count_once(settings, replay_id):
    with session_scope(settings.database_url) as s:
        assert store.claim_slice(s, replay_id, 0, grace_s=10)[0] == "run"
        assert store.write_window(s, replay_id, 0, [_row(0, 0), _row(0, 1)])
        assert store.write_window(s, replay_id, 0, [_row(0, 1), _row(1, 0)])  # a redelivered window
        assert not store.write_window(s, replay_id, 1, [])  # slice 1 does not own the replay: it must stop
        assert s.get(Replay, uuid.UUID(replay_id)).done_steps == 3
        assert store.stored_keys(s, replay_id, 0) == {0, 1}
        assert store.succeed(s, replay_id) and not store.succeed(s, replay_id)
    with session_scope(settings.database_url) as s:
        replay = s.get(Replay, uuid.UUID(replay_id))
        assert replay.state == "succeeded" and replay.done_steps == 3 and replay.summary["steps"] == 3
        assert replay.summary["mse"] == pytest.approx(0.01) and not store.cancel(s, replay)
        assert not store.write_window(s, replay_id, 0, [])  # nor does any slice once it has ended


def test_camera_mapping_and_robot_state():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert list(map_cameras({"front": a, "wrist": b}, None, ["primary"])) == ["primary"]
    assert map_cameras({"front": a, "wrist": b}, None, ["base", "left"])["left"] is b
    assert map_cameras({"front": a, "wrist": b}, {"wrist": "base"}, ["base", "left"]) == {"base": b}
    step = Step(0, 0, {"front": a}, "go", np.arange(8.0), np.zeros(7))
    assert robot_state(step, "dataset") == {"ee_position": [0.0, 1.0, 2.0], "ee_orientation": [3.0, 4.0, 5.0]}
    assert robot_state(step, "none") is None


def test_a_replay_stored_without_a_robot_is_judged_by_the_default_in_monitor_mode(settings):
    """Issue 21: rows used to carry safety_decision null. A replay submitted before the web resolved a robot
    is judged against SAFETY_DEFAULT_ROBOT, monitor mode: flagged, never changed, and the row names the profile."""
    options = resolve_robot({"robot_config": None, "safety": None}, settings)
    fut: Future = Future()
    fut.trace = ItemTrace(enqueued_at=time.monotonic())  # type: ignore[attr-defined]
    wild = np.array([[0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 7.0]])  # far past the velocity caps, gripper out of range
    fut.set_result(PolicyResult(wild, "delta_ee", ["m"] * 7, {}))
    step = Step(0, 0, {}, "go", None, np.zeros(7))
    row = step_row(step, fut, options, settings)
    assert row["safety_decision"] is not None and row["safety_flags"]
    assert row["safety_profile"].split("@")[0] == settings.safety_default_robot
    assert row["predicted_action"] == row["raw_action"]
