"""Cancel, and a GPU worker killed with SIGKILL in the middle of a job.

`openvla-slow` is the tiny OpenVLA checkpoint served by a worker whose batcher waits 1.5 s for company
(BATCH_MAX_WAIT_MS), so a lone job sits `running` long enough to cancel it or kill its worker.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.helpers import request_body
from tests.integration.conftest import VISIBILITY_S
from tests.integration.workers import gpu_worker, wait_ready
from workers.store.models import Job, UsageRecord

SLOW = {"BATCH_MAX_WAIT_MS": "1500", "BROKER_VISIBILITY_TIMEOUT_S": VISIBILITY_S}


def _state(db_session, job_id):
    db_session.expire_all()
    return db_session.get(Job, job_id)


def _wait_state(db_session, job_id, states, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = _state(db_session, job_id)
        if job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}; it is {job.state}")


@pytest.fixture()
def slow_worker(redis_client, log_dir, workers):
    proc = gpu_worker("openvla-slow", log_dir, **SLOW).start()
    wait_ready(redis_client, "openvla-slow", worker=proc)
    yield proc
    proc.stop()


def _running_in_a_burst(client, headers, db_session, n: int = 3, **body) -> tuple[str, list[str]]:
    """Submit `n` jobs at once and return one seen `running`, with all their ids. A lone job runs at once (the
    batcher opens its window only under concurrency, and the worker claims a job while its pass runs), so a
    burst is what keeps jobs claimed and waiting in the 1.5 s window (SLOW) long enough to act on. The latest
    are looked at first: the first of the burst may have run alone and be ending already."""
    ids = [client.post("/v1/jobs", json=request_body("openvla-slow", **body), headers=headers).get_json()["id"]
           for _ in range(n)]
    end = time.monotonic() + 30
    while time.monotonic() < end:
        for job_id in reversed(ids):
            if _state(db_session, job_id).state == "running":
                return job_id, ids
        time.sleep(0.01)
    raise AssertionError(f"none of {ids} was seen running")


def test_cancel_running_job_never_delivers(client, make_customer, slow_worker, db_session):
    headers = make_customer()[2]
    running, _ = _running_in_a_burst(client, headers, db_session)
    job = {"id": running}
    resp = client.delete(f"/v1/jobs/{job['id']}", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["state"] == "canceled"
    time.sleep(2.5)  # the batch runs after its 1.5 s wait; its result must not land
    final = client.get(f"/v1/jobs/{job['id']}", headers=headers).get_json()
    assert final["state"] == "canceled" and final["result"] is None
    assert client.delete(f"/v1/jobs/{job['id']}", headers=headers).status_code == 409


def test_worker_sigkill_mid_job_completes_exactly_once(client, make_customer, redis_client, log_dir, workers,
                                                         db_session):
    headers = make_customer()[2]
    first = gpu_worker("openvla-slow", log_dir, **SLOW).start()
    try:
        wait_ready(redis_client, "openvla-slow", worker=first)
        running, ids = _running_in_a_burst(client, headers, db_session, deadline_ms=120000)
        first.kill()  # SIGKILL: no ack, no cleanup; the messages stay unacknowledged in Redis
    finally:
        first.kill()
    assert _state(db_session, running).state == "running"
    second = gpu_worker("openvla-slow", log_dir, **SLOW).start()
    try:
        for job_id in ids:
            done = _wait_state(db_session, job_id, {"succeeded", "failed", "expired"}, timeout=60)
            assert done.state == "succeeded", done.error
            assert len(done.result["action"]["values"]) == 7
        # Claimed by the killed worker, then again after redelivery (more than twice when the new worker's
        # model load outlasts the test's 4 s visibility timeout: each copy still finishes the job at most once).
        assert _state(db_session, running).attempts >= 2
        finished = {job_id: _state(db_session, job_id).finished_at for job_id in ids}
        time.sleep(float(VISIBILITY_S) + 1)  # a stray second delivery would have finished by now
        for job_id in ids:
            usage = db_session.execute(select(func.count()).select_from(UsageRecord)
                                       .where(UsageRecord.job_id == job_id)).scalar_one()
            assert usage == 1
            assert _state(db_session, job_id).finished_at == finished[job_id]
    finally:
        second.stop()


def test_json_logs_carry_the_request_id_into_the_tasks(client, make_customer, redis_client, log_dir, workers):
    import json

    proc = gpu_worker("openvla-slow", log_dir, **{**SLOW, "BATCH_MAX_WAIT_MS": "0", "LOG_LEVEL": "INFO"}).start()
    try:
        wait_ready(redis_client, "openvla-slow", worker=proc)
        rid = "req-trace-0123456789"
        resp = client.post("/v1/inference", json=request_body("openvla-slow"),
                           headers={**make_customer()[2], "X-Request-ID": rid})
        assert resp.status_code == 200 and resp.get_json()["request_id"] == rid
        lines = [json.loads(ln) for ln in proc.tail(200_000).splitlines() if ln.startswith("{")]
        mine = [ln for ln in lines if ln.get("request_id") == rid]
        assert any(ln["msg"] == "inference done" and ln["job_id"] == resp.get_json()["job_id"] for ln in mine)
        assert all({"ts", "level", "logger", "msg"} <= set(ln) for ln in lines)
    finally:
        proc.stop()
