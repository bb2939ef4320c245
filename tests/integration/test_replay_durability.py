"""Replays at length and through failure: 1,000 steps beside interactive traffic, and a SIGKILLed worker."""
from __future__ import annotations

import time
import uuid

from sqlalchemy import func, select

from tests.helpers import request_body
from tests.integration.conftest import VISIBILITY_S
from tests.integration.replay_helpers import poll_replay, write_dataset
from tests.integration.workers import gpu_worker, wait_ready
from workers.store.models import Replay, ReplayStep


def _rows(db_session, rid: str) -> int:
    db_session.commit()  # a fresh snapshot each time
    return db_session.execute(select(func.count()).select_from(ReplayStep)
                              .where(ReplayStep.replay_id == uuid.UUID(rid))).scalar_one()


def test_thousand_steps_beside_interactive_jobs(client, headers, data_root, workers):
    path, total = write_dataset("npz", data_root.dir, episodes=2, steps=500, state_dim=None)
    assert total == 1000
    resp = client.post("/v1/replays", json={"model": "openvla-tiny", "dataset": {"path": data_root.rel(path)},
                                            "robot_config": {"type": "widowx_250"}}, headers=headers)
    rid = resp.get_json()["id"]
    body = poll_replay(client, headers, rid, until=("running",))
    # Interactive requests keep being served while the replay fills the same batcher: they go first.
    for _ in range(3):
        t0 = time.monotonic()
        sync = client.post("/v1/inference", json=request_body(), headers=headers)
        assert sync.status_code == 200, sync.get_json()
        assert time.monotonic() - t0 < 5.0
    seen_partial = False
    end = time.monotonic() + 150
    while body["state"] not in ("succeeded", "failed", "canceled") and time.monotonic() < end:
        seen_partial |= 0 < body["progress"]["done_steps"] < total
        time.sleep(0.2)
        body = client.get(f"/v1/replays/{rid}", headers=headers).get_json()
    assert body["state"] == "succeeded", body
    assert seen_partial and body["progress"]["done_steps"] == total and body["summary"]["steps"] == total
    assert body["progress"]["steps_per_second"] > 0 and body["progress"]["eta_seconds"] == 0.0


def test_sigkilled_worker_resumes_without_double_counting(client, headers, data_root, redis_client, log_dir,
                                                          db_session):
    env = {"BROKER_VISIBILITY_TIMEOUT_S": VISIBILITY_S}
    path, total = write_dataset("npz", data_root.dir, episodes=2, steps=150, image_hw=(32, 32))
    first = gpu_worker("openvla-replay", log_dir, **env).start()
    try:
        wait_ready(redis_client, "openvla-replay", worker=first)
        rid = client.post("/v1/replays", json={"model": "openvla-replay", "dataset": {"path": data_root.rel(path)}},
                          headers=headers).get_json()["id"]
        end = time.monotonic() + 60
        while _rows(db_session, rid) < 30 and time.monotonic() < end:
            time.sleep(0.05)
        first.kill()  # SIGKILL mid-slice: its message is unacknowledged and comes back after the timeout
        at_kill = _rows(db_session, rid)
        assert 30 <= at_kill < total
    finally:
        first.stop()
    second = gpu_worker("openvla-replay", log_dir, **env).start()
    try:
        done = poll_replay(client, headers, rid, timeout=120)
    finally:
        second.stop()
    assert done["state"] == "succeeded", (done, second.tail())
    assert _rows(db_session, rid) == total
    replay = db_session.get(Replay, uuid.UUID(rid))
    db_session.refresh(replay)
    assert replay.done_steps == total == done["progress"]["done_steps"] == done["summary"]["steps"]
