"""Accepted work is never answered as failed, and a retry is charged once (issue 22, items 2 and 3), with real
worker processes, PostgreSQL and Redis: a synchronous /v1/inference whose wait fails after its row was committed
(the web's redis-server is SIGKILLed under the wait) answers 503 with the job's id and Location, and the job
still completes, charged once; Idempotency-Key on /v1/inference, /act and the openpi websocket returns the first
request's job and action, with one usage row and one rate-limit unit."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import json_numpy
import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from sqlalchemy import func, select

from ops.faults import RedisServer
from tests.helpers import request_body
from tests.integration.live import free_port, serve
from web.services.idempotency import OBSERVATION_KEY
from workers.store.db import session_scope
from workers.store.models import Job, UsageRecord


def _usage_rows(settings, job_id: str) -> int:
    with session_scope(settings.database_url) as s:
        return s.execute(select(func.count()).select_from(UsageRecord)
                         .where(UsageRecord.job_id == uuid.UUID(job_id))).scalar_one()


def _jobs_with_key(settings, key: str) -> list[str]:
    with session_scope(settings.database_url) as s:
        return [str(j) for j in s.execute(select(Job.id).where(Job.idempotency_key == key)).scalars()]


def _kill_when_committed(settings, key: str, server: RedisServer) -> threading.Thread:
    """SIGKILL the web's redis-server as soon as the job's row is committed: the request is then past its
    commit and publish (the broker is another server), blocked on, or about to block on, its wake-up token."""
    def run() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end and not _jobs_with_key(settings, key):
            time.sleep(0.01)
        server.kill()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_wait_that_fails_after_the_commit_answers_with_the_job(settings, workers, make_customer, client,
                                                                    tmp_path):
    from web.app import create_app

    web_redis = RedisServer(tmp_path / "redis").start()
    try:
        # The web's Redis (limits, in-flight, resend copy, wake-ups) is a private server; the broker and the
        # workers keep the shared one, so the job runs while the web's wait loses its server.
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, redis_url=web_redis.url)})
        headers = make_customer()[2]
        key = f"k-{uuid.uuid4().hex}"
        body = request_body(deadline_ms=15000)
        killer = _kill_when_committed(settings, key, web_redis)
        resp = app.test_client().post("/v1/inference", json=body, headers={**headers, "Idempotency-Key": key})
        killer.join(30)
    finally:
        web_redis.stop()
    doc = resp.get_json()
    assert resp.status_code == 503, doc
    assert doc["type"].endswith("accepted_wait_failed") and resp.headers["Retry-After"]
    [job_id] = _jobs_with_key(settings, key)
    assert doc["job_id"] == job_id and resp.headers["Location"] == f"/v1/jobs/{job_id}" == doc["location"]
    # The job exists and completes, charged once.
    final = client.get(f"/v1/jobs/{job_id}/wait?timeout=20", headers=headers).get_json()
    assert final["state"] == "succeeded", final
    assert _usage_rows(settings, job_id) == 1
    # The client retries per Retry-After with the same key (on a web whose Redis is up): the same job and action,
    # no second job, no second usage row, and no rate-limit unit taken by the retry.
    again = client.post("/v1/inference", json=body, headers={**headers, "Idempotency-Key": key})
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["job_id"] == job_id
    assert again.get_json()["action"] == final["result"]["action"]
    assert _jobs_with_key(settings, key) == [job_id] and _usage_rows(settings, job_id) == 1
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0


def test_same_key_on_v1_inference_is_one_job_one_charge(settings, workers, make_customer, client):
    headers = make_customer()[2]
    key = f"k-{uuid.uuid4().hex}"
    body = request_body(seed=7)
    first = client.post("/v1/inference", json=body, headers={**headers, "Idempotency-Key": key})
    second = client.post("/v1/inference", json=body, headers={**headers, "Idempotency-Key": key})
    assert first.status_code == second.status_code == 200, (first.get_json(), second.get_json())
    a, b = first.get_json(), second.get_json()
    assert a["job_id"] == b["job_id"] and a["action"] == b["action"]
    assert _jobs_with_key(settings, key) == [a["job_id"]] and _usage_rows(settings, a["job_id"]) == 1
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 1
    other = client.post("/v1/inference", json=request_body(seed=8), headers={**headers, "Idempotency-Key": key})
    assert other.status_code == 422 and other.get_json()["type"].endswith("idempotency_key_reused")


def test_a_retry_waits_for_a_job_still_running(settings, workers, make_customer, client):
    """The key's job was submitted with POST /v1/jobs (202 at once); the same key and body on /v1/inference
    waits for that job and answers its action."""
    headers = {**make_customer()[2], "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    body = request_body()
    job_id = client.post("/v1/jobs", json=body, headers=headers).get_json()["id"]
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["job_id"] == job_id
    assert resp.get_json()["action"]["values"] is not None
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 1


def test_same_key_on_act_is_one_job(settings, workers, make_customer, client):
    headers = {**make_customer()[2], "Idempotency-Key": f"k-{uuid.uuid4().hex}",
               "Content-Type": "application/json"}
    body = json_numpy.dumps({"image": np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8),
                             "instruction": "pick", "model": "openvla-tiny", "seed": 3})
    first, second = (client.post("/act", data=body, headers=headers) for _ in range(2))
    assert first.status_code == second.status_code == 200, first.get_data(as_text=True)
    assert first.get_data() == second.get_data()
    [job_id] = _jobs_with_key(settings, headers["Idempotency-Key"])
    assert _usage_rows(settings, job_id) == 1
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 1
    # The image is part of the body the key was made with: another image under the same key is refused.
    other = json_numpy.dumps({"image": np.zeros((64, 64, 3), dtype=np.uint8), "instruction": "pick",
                              "model": "openvla-tiny", "seed": 3})
    resp = client.post("/act", data=other, headers=headers)
    assert resp.status_code == 422 and resp.get_json()["type"].endswith("idempotency_key_reused")


@pytest.fixture(scope="module")
def ws_url(tmp_path_factory):
    port = free_port()
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path_factory.mktemp("openpi") / "ws.log"):
        yield f"ws://127.0.0.1:{port}/v1/openpi"


def test_same_key_on_the_websocket_is_one_job(settings, workers, make_customer, client, ws_url):
    _, api_key, headers = make_customer()
    policy = WebsocketClientPolicy(host=f"{ws_url}/openvla-tiny", api_key=api_key)
    key = f"k-{uuid.uuid4().hex}"
    obs = {"images": {"primary": np.zeros((64, 64, 3), dtype=np.uint8)}, "prompt": "pick", OBSERVATION_KEY: key}
    first, second = policy.infer(obs), policy.infer(obs)
    assert first["vlaapi"]["job_id"] == second["vlaapi"]["job_id"]
    assert np.array_equal(first["actions"], second["actions"])
    assert _jobs_with_key(settings, key) == [first["vlaapi"]["job_id"]]
    assert _usage_rows(settings, first["vlaapi"]["job_id"]) == 1
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 1
    # Without the key, the same observation is a new job.
    third = policy.infer({k: v for k, v in obs.items() if k != OBSERVATION_KEY})
    assert third["vlaapi"]["job_id"] != first["vlaapi"]["job_id"]
