"""The reaper against real PostgreSQL, Redis and worker processes: lost jobs end by their deadline plus the
grace, exactly once with two reapers at once; a replay whose message is gone resumes; orphans are swept; a
SIGKILLed GPU worker's claimed jobs are released within 3 s and finish on another worker, charged once."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ops.lifeline import lifeline
from ops.reaper import Reaper, ReaperConfig, serve
from tests.helpers import request_body
from tests.integration.conftest import VISIBILITY_S
from tests.integration.replay_helpers import poll_replay, write_dataset
from tests.integration.workers import ROOT, gpu_worker, wait_ready
from web.metrics import _PRIORITY_SUFFIXES
from web.ratelimit.inflight import InFlight
from workers.store.models import Job, UsageRecord
from workers.wire import notify, resend
from workers.wire.queues import infer_queue

GRACE_S = 0.5
NO_WORKER_MODEL = "openvla-slow"  # enabled, and no worker consumes it in these tests


def _drop_queue(redis_client, queue: str) -> int:
    """What a Redis that lost its data does to a queue: the messages are gone."""
    return sum(redis_client.delete(queue + suffix) for suffix in _PRIORITY_SUFFIXES)


def _submit_lost(client, headers, redis_client, n: int, deadline_ms: int = 1000) -> list[str]:
    ids = [client.post("/v1/jobs", json=request_body(NO_WORKER_MODEL, deadline_ms=deadline_ms),
                       headers=headers).get_json()["id"] for _ in range(n)]
    assert _drop_queue(redis_client, infer_queue(NO_WORKER_MODEL)) >= 1
    return ids


def _job(db_session, job_id: str) -> Job:
    db_session.expire_all()
    return db_session.get(Job, uuid.UUID(job_id))


def _usage_rows(db_session, ids: list[str]) -> int:
    return db_session.execute(select(func.count()).select_from(UsageRecord).where(
        UsageRecord.job_id.in_([uuid.UUID(i) for i in ids]))).scalar_one()


@pytest.fixture()
def reaper(settings):
    return Reaper(settings, ReaperConfig(interval_s=0.2, grace_s=GRACE_S, sweep_s=0.0))


def test_lost_job_ends_expired_by_deadline_plus_grace(client, make_customer, redis_client, reaper, db_session):
    customer, _, headers = make_customer()
    [job_id] = _submit_lost(client, headers, redis_client, 1)
    job = _job(db_session, job_id)
    while _job(db_session, job_id).state in ("queued", "running"):
        assert time.time() < job.deadline_at.timestamp() + GRACE_S + 2.0, "not reaped by deadline + grace"
        reaper.run_pass()
        time.sleep(0.1)
    job = _job(db_session, job_id)
    assert job.state == "expired" and job.error["code"] == "lost"
    assert job.finished_at.timestamp() >= job.deadline_at.timestamp() + GRACE_S
    assert _usage_rows(db_session, [job_id]) == 1
    # The same wake-up as a worker's: a waiter reads the token at once, and the in-flight slot is free.
    assert notify.wait_done(redis_client, job_id, 1.0)
    assert InFlight(redis_client).count(str(job.customer_id)) == 0
    body = client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()
    assert body["state"] == "expired" and body["error"]["code"] == "lost"


def test_two_reaper_processes_end_each_job_exactly_once(client, make_customer, redis_client, db_session):
    headers = make_customer()[2]
    redis_client.delete(notify.REAPER_ACTIONS_KEY)
    ids = _submit_lost(client, headers, redis_client, 12)
    env = {**os.environ, "REAPER_INTERVAL_S": "0.05", "REAPER_GRACE_S": str(GRACE_S), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "ops.reaper"], cwd=ROOT, env=env,
                              preexec_fn=lifeline()) for _ in range(2)]
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and any(_job(db_session, i).state in ("queued", "running") for i in ids):
            time.sleep(0.1)
        time.sleep(0.5)  # both keep passing over the ended rows
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(timeout=15) == 0
    assert {_job(db_session, i).state for i in ids} == {"expired"}
    assert _usage_rows(db_session, ids) == len(ids)
    actions = notify.read_actions(redis_client)
    assert actions["jobs_expired"] == len(ids) and actions["passes"] > 4
    # Both withdrew their heartbeats on SIGTERM.
    beats = notify.read_heartbeats(redis_client, "reaper", key=notify.stage_key("reaper"))
    assert not {b["hostname"].rsplit(":", 1)[1] for b in beats} & {str(p.pid) for p in procs}


def test_replay_whose_message_was_lost_resumes(client, headers, data_root, redis_client, log_dir, settings,
                                               db_session):
    path, total = write_dataset("npz", data_root.dir, episodes=1, steps=40, image_hw=(32, 32))
    rid = client.post("/v1/replays", json={"model": "openvla-replay", "dataset": {"path": data_root.rel(path)}},
                      headers=headers).get_json()["id"]
    assert _drop_queue(redis_client, infer_queue("openvla-replay", "replay")) == 1
    worker = gpu_worker("openvla-replay", log_dir, BROKER_VISIBILITY_TIMEOUT_S=VISIBILITY_S).start()
    fast = dataclasses.replace(settings, broker_visibility_timeout_s=int(VISIBILITY_S))
    reaper = Reaper(fast, ReaperConfig(interval_s=0.2, grace_s=GRACE_S, sweep_s=3600))
    try:
        wait_ready(redis_client, "openvla-replay", worker=worker)
        assert client.get(f"/v1/replays/{rid}", headers=headers).get_json()["state"] == "queued"
        resumed, end = 0, time.monotonic() + 60
        while time.monotonic() < end:
            resumed += reaper.run_pass()["replays_resumed"]
            if client.get(f"/v1/replays/{rid}", headers=headers).get_json()["state"] == "succeeded":
                break
            time.sleep(0.2)
        done = poll_replay(client, headers, rid, timeout=5)
    finally:
        worker.stop()
    assert done["state"] == "succeeded" and done["progress"]["done_steps"] == total
    assert resumed >= 1


def test_sweep_deletes_orphaned_uploads_and_stale_leases(client, make_customer, settings, redis_client, reaper,
                                                        db_session):
    upload_dir = Path(settings.replay_upload_dir)
    orphan, fresh = upload_dir / f"orphan-{uuid.uuid4().hex}", upload_dir / f"fresh-{uuid.uuid4().hex}"
    for d in (orphan, fresh):
        (d / "dataset").mkdir(parents=True)
        (d / "dataset" / "x.npz").write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    # A lease left behind by a job that ended while Redis could not hear of it.
    headers = make_customer()[2]
    [job_id] = _submit_lost(client, headers, redis_client, 1, deadline_ms=100)
    job = _job(db_session, job_id)
    time.sleep(GRACE_S + 0.3)
    reaper.run_pass(sweep=False)
    assert _job(db_session, job_id).state == "expired"
    inflight = InFlight(redis_client)
    inflight.acquire(str(job.customer_id), job_id, 0, 300)
    counts = reaper.run_pass(sweep=True)
    try:
        assert not orphan.exists() and fresh.exists()
        assert counts["uploads_deleted"] >= 1 and counts["leases_released"] >= 1
        assert inflight.count(str(job.customer_id)) == 0
    finally:
        import shutil

        shutil.rmtree(fresh, ignore_errors=True)


def test_metrics_export_the_reaper_actions(client, redis_client, reaper):
    reaper.run_pass(sweep=False)
    text = client.get("/metrics").get_data(as_text=True)
    passes = [ln for ln in text.splitlines() if ln.startswith('vla_reaper_actions_total{action="passes"}')]
    assert passes and float(passes[0].split()[-1]) >= 1
    assert 'vla_reaper_actions_total{action="jobs_expired"}' in text
    assert 'vla_stage_live_workers{service="reaper"}' in text


def test_a_job_whose_message_was_lost_is_republished_once_and_completes(client, make_customer, redis_client,
                                                                          reaper, db_session, log_dir, workers):
    """The web died between its commit and its publish, or the broker lost the message: the reaper sends the
    kept copy (workers/wire/resend.py) once, and the job completes instead of waiting out its deadline."""
    headers = make_customer()[2]
    [job_id] = _submit_lost(client, headers, redis_client, 1, deadline_ms=120_000)
    assert reaper.republish_jobs() == 0  # not yet: a message may simply be slow for REPUBLISH_AFTER_S
    # Age the job past REPUBLISH_AFTER_S instead of sleeping through it.
    db_session.execute(Job.__table__.update().where(Job.id == uuid.UUID(job_id))
                       .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 6)))
    db_session.commit()
    assert reaper.run_pass()["jobs_republished"] == 1
    assert reaper.republish_jobs() == 0  # at most once, whatever number of reapers or passes
    assert sum(redis_client.llen(infer_queue(NO_WORKER_MODEL) + s) for s in _PRIORITY_SUFFIXES) == 1
    worker = gpu_worker(NO_WORKER_MODEL, log_dir).start()
    try:
        wait_ready(redis_client, NO_WORKER_MODEL, worker=worker)
        end = time.monotonic() + 60
        while _job(db_session, job_id).state in ("queued", "running") and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        worker.stop()
    job = _job(db_session, job_id)
    assert job.state == "succeeded", job.error
    assert _usage_rows(db_session, [job_id]) == 1


def test_a_killed_gpu_workers_claimed_jobs_are_released_within_3_s(client, make_customer, redis_client, settings,
                                                                    db_session, log_dir):
    """Issue 22: the jobs a GPU worker held when it was SIGKILLed go back to the queue (deadline allowing) within
    3 s of its death, through the reaper's heartbeat watch, not at their deadline plus the grace; a second worker
    then finishes every job, each charged once."""
    headers = make_customer()[2]
    env = {"BATCH_MAX_SIZE": "1", "BATCH_MAX_WAIT_MS": "0"}
    first = gpu_worker(NO_WORKER_MODEL, log_dir, **env).start()
    stop = threading.Event()
    watcher = threading.Thread(target=serve, args=(Reaper(settings, ReaperConfig(sweep_s=3600)), stop), daemon=True)
    try:
        wait_ready(redis_client, NO_WORKER_MODEL, worker=first)
        watcher.start()
        ids = [client.post("/v1/jobs", json=request_body(NO_WORKER_MODEL, deadline_ms=60000, seed=i),
                           headers=headers).get_json()["id"] for i in range(48)]

        def held() -> list[str]:
            db_session.expire_all()
            return [str(i) for i in db_session.execute(select(Job.id).where(
                Job.id.in_([uuid.UUID(i) for i in ids]), Job.state == "running", Job.worker.is_not(None))).scalars()]

        deadline = time.monotonic() + 60
        while not held():
            assert time.monotonic() < deadline, "no job ever claimed"
            time.sleep(0.005)
        first.kill(signal.SIGKILL)
        t0 = time.monotonic()
        claimed = held()
        while held():
            assert time.monotonic() - t0 < 10, "claimed jobs not released"
            time.sleep(0.05)
        released_s = time.monotonic() - t0
        second = gpu_worker(NO_WORKER_MODEL, log_dir, **env).start()
        try:
            end = time.monotonic() + 90
            while {_job(db_session, i).state for i in ids} != {"succeeded"}:
                assert time.monotonic() < end, "not every job succeeded after the release"
                time.sleep(0.2)
        finally:
            second.stop()
    finally:
        stop.set()
        first.stop()
        watcher.join(10)
    assert claimed and released_s <= 3.0, (claimed, released_s)
    assert _usage_rows(db_session, ids) == len(ids)


def test_a_dead_gpu_workers_model_has_its_newest_queued_jobs_republished(client, make_customer, redis_client,
                                                                          reaper, db_session):
    """A worker's BRPOP can take a message as the worker dies (answered to a dead socket: gone from Redis, and
    never claimed, so not among the jobs it held). The reaper's watch, seeing the worker gone, publishes its
    model's just-accepted, still-queued jobs again from the kept copy, left in place; a job older than that
    window waits for the ordinary REPUBLISH_AFTER_S pass."""
    headers = make_customer()[2]
    [old] = _submit_lost(client, headers, redis_client, 1, deadline_ms=120_000)
    db_session.execute(Job.__table__.update().where(Job.id == uuid.UUID(old))
                       .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 30)))
    db_session.commit()
    [new] = _submit_lost(client, headers, redis_client, 1, deadline_ms=120_000)
    host = f"ghost-{uuid.uuid4().hex[:6]}:1"
    notify.publish_heartbeat(redis_client, NO_WORKER_MODEL, host, {"state": "ready", "consuming": True}, ttl_s=30)
    try:
        assert reaper.watch() == {"jobs_released": 0, "jobs_republished": 0}  # seen live
        notify.withdraw_heartbeat(redis_client, NO_WORKER_MODEL, host)
        assert reaper.watch() == {"jobs_released": 0, "jobs_republished": 1}  # gone: `new` only
        assert sum(redis_client.llen(infer_queue(NO_WORKER_MODEL) + s) for s in _PRIORITY_SUFFIXES) == 1
        assert reaper.republish_jobs() == 1  # the copies stayed: `old` (and `new`, once aged) can still go again
    finally:
        notify.withdraw_heartbeat(redis_client, NO_WORKER_MODEL, host)
        _drop_queue(redis_client, infer_queue(NO_WORKER_MODEL))
        for job_id in (old, new):  # nothing left for a later test's reaper to publish
            redis_client.delete(resend.key(job_id))
            db_session.execute(Job.__table__.update().where(Job.id == uuid.UUID(job_id)).values(state="canceled"))
        db_session.commit()
