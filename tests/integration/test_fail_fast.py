"""Fail-fast admission against a real sim GPU worker (workers/policies/sim.py): when the model's backlog and the
curve its worker learned say a deadline cannot be met, the web answers 503 deadline_unattainable at once."""
from __future__ import annotations

import dataclasses
import time

import pytest

from tests.helpers import request_body
from tests.integration.workers import gpu_worker, safety_worker, wait_ready
from workers.wire import notify

MODEL = "fleet-sim"
# A slow simulated GPU (250 ms for one item, 600 for 8), so a backlog builds from a handful of requests.
ENTRY = f"{MODEL}=sim:openvla?a_ms=200&b_ms=50"


@pytest.fixture(scope="module")
def sim_worker(redis_client, log_dir, settings):
    env = {"ENABLED_MODELS": f"{settings.enabled_models},{ENTRY}", "VLAAPI_BENCHMARK": "1"}
    procs = [gpu_worker(MODEL, log_dir, **env).start(), safety_worker(log_dir).start()]
    try:
        wait_ready(redis_client, MODEL, worker=procs[0])
        yield procs[0]
    finally:
        for p in procs:
            p.stop()


def app_with(settings, **changes):
    from web.app import create_app

    s = dataclasses.replace(settings, enabled_models=f"{settings.enabled_models},{ENTRY}", **changes)
    return create_app({"TESTING": True, "SETTINGS": s}).test_client()


def wait_for_curve(redis_client, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        beats = notify.read_heartbeats(redis_client, MODEL)
        if any((b.get("stats") or {}).get("curve", {}).get("a_ms") for b in beats):
            time.sleep(1.1)  # the web's heartbeat cache
            return
        time.sleep(0.1)
    raise TimeoutError("the sim worker never reported a learned curve")


def test_unattainable_deadline_answered_at_once(sim_worker, redis_client, settings, make_customer) -> None:
    client, headers = app_with(settings), make_customer("enterprise")[2]
    warm = client.post("/v1/inference", json=request_body(MODEL, deadline_ms=20000), headers=headers)
    assert warm.status_code == 200, warm.get_json()
    assert warm.get_json()["performance"]["model_timings_ms"]["simulated_ms"] > 0  # labelled simulated
    wait_for_curve(redis_client)
    for _ in range(10):  # a backlog: 10 queued jobs ahead, ~2.5 passes of 600 ms for the next one
        assert client.post("/v1/jobs", json=request_body(MODEL, deadline_ms=20000), headers=headers).status_code == 202
    began = time.monotonic()
    resp = client.post("/v1/inference", json=request_body(MODEL, deadline_ms=300), headers=headers)
    took_ms = (time.monotonic() - began) * 1e3
    doc = resp.get_json()
    assert resp.status_code == 503, doc
    assert doc["type"].endswith("deadline_unattainable") and doc["request_id"]
    assert int(resp.headers["Retry-After"]) >= 1 and doc["retry_after_ms"] > 0
    assert doc["expected_ms"] > doc["deadline_ms"] == 300
    assert took_ms < 2000, took_ms  # answered before its deadline would even have passed (loaded 2-core VM)
    # A deadline the backlog can meet is still accepted.
    assert client.post("/v1/jobs", json=request_body(MODEL, deadline_ms=20000), headers=headers).status_code == 202


def test_without_fail_fast_the_same_request_is_accepted_and_expires(sim_worker, redis_client, settings,
                                                                    make_customer) -> None:
    client, headers = app_with(settings, admission_fail_fast=False), make_customer("enterprise")[2]
    wait_for_curve(redis_client)
    for _ in range(10):
        assert client.post("/v1/jobs", json=request_body(MODEL, deadline_ms=20000), headers=headers).status_code == 202
    resp = client.post("/v1/jobs", json=request_body(MODEL, deadline_ms=300), headers=headers)
    assert resp.status_code == 202
    job = client.get(f"/v1/jobs/{resp.get_json()['id']}/wait?timeout=20", headers=headers).get_json()
    assert job["state"] == "expired" and job["error"]["code"] == "deadline_exceeded"
