"""The job pipeline end to end: real web app, PostgreSQL, Redis, and Celery worker processes."""
from __future__ import annotations

import time

from sqlalchemy import func, select

from tests.helpers import png_b64, request_body
from workers.store.models import Job, UsageRecord
from workers.wire import notify


def _poll(client, headers, job_id, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()
        if body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def test_submit_then_poll(client, headers, workers):
    resp = client.post("/v1/jobs", json=request_body(), headers=headers)
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued"
    done = _poll(client, headers, job["id"])
    assert done["state"] == "succeeded", done
    action = done["result"]["action"]
    assert action["dimensions"] == 7 and action["chunk_length"] == 1 and len(action["values"]) == 7
    assert action["units"][:3] == ["m", "m", "m"]
    perf = done["performance"]
    assert perf["queue_wait_ms"] >= 0 and perf["inference_ms"] > 0 and perf["safety_check_ms"] > 0
    assert perf["total_latency_ms"] >= perf["inference_ms"]
    assert done["request"]["images"]["primary"]["bytes"] > 0 and "sha256" in done["request"]["images"]["primary"]


def test_wait_endpoint_blocks_until_done(client, headers, workers):
    job = client.post("/v1/jobs", json=request_body(), headers=headers).get_json()
    resp = client.get(f"/v1/jobs/{job['id']}/wait?timeout=30", headers=headers)
    assert resp.status_code == 200
    assert resp.get_json()["state"] == "succeeded"


def test_sync_inference_returns_spec_shape(client, headers, workers, redis_client):
    resp = client.post("/v1/inference", json=request_body(), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert set(body) >= {"request_id", "timestamp", "model", "action", "safety", "performance", "usage"}
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert body["action"]["type"] and len(body["action"]["values"]) == body["action"]["dimensions"]
    safety = body["safety"]
    assert {"overall_score", "checks_passed", "flags", "classifier_confidence", "modifications_applied"} <= set(safety)
    assert safety["decision"] in ("allowed", "modified")
    assert body["usage"]["requests_this_minute"] >= 1
    # The waiter took the worker's outcome token and left only the bare state behind (tokens live minutes).
    assert redis_client.lrange(notify.done_key(body["job_id"]), 0, -1) == [b"succeeded"]
    # The answer came from the worker's token (no read of the row); it is what the durable row says.
    row = client.get(f"/v1/jobs/{body['job_id']}", headers=headers).get_json()
    assert row["state"] == "succeeded" and body["timestamp"] == row["finished_at"]
    assert body["action"] == row["result"]["action"] and body["safety"] == row["result"]["safety"]
    assert body["performance"] == {**row["performance"], "model_timings_ms": row["result"]["model_timings_ms"]}
    # Server-Timing: where the web process spent the request; the phases lie within the total.
    phases = dict(part.strip().split(";dur=") for part in resp.headers["Server-Timing"].split(","))
    assert set(phases) == {"auth", "admit", "enqueue", "wait", "total"}
    assert all(float(v) >= 0 for v in phases.values())
    assert sum(float(v) for k, v in phases.items() if k != "total") <= float(phases["total"]) + 0.1


def test_chunk_model_returns_whole_chunk(client, headers, workers):
    body = request_body("pi0-tiny", image=None, images={"base_0_rgb": png_b64(), "left_wrist_0_rgb": png_b64(seed=1)},
                        state=[0.0] * 8, seed=3)
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    action = resp.get_json()["action"]
    assert action["chunk_length"] == 50 and len(action["values"]) == 50 and len(action["values"][0]) == 7


def test_deadline_expired_never_returns_action(client, headers, workers, db_session):
    resp = client.post("/v1/jobs", json=request_body(deadline_ms=1), headers=headers)
    job = _poll(client, headers, resp.get_json()["id"])
    assert job["state"] == "expired"
    assert job["result"] is None and job["error"]["code"] == "deadline_exceeded"


def test_sync_path_expired_is_504(client, headers, workers):
    resp = client.post("/v1/inference", json=request_body(deadline_ms=1), headers=headers)
    assert resp.status_code == 504
    assert resp.get_json()["type"].endswith("deadline_exceeded")


def test_usage_recorded_once_per_job(client, headers, workers, db_session):
    job = client.post("/v1/jobs", json=request_body(), headers=headers).get_json()
    _poll(client, headers, job["id"])
    n = db_session.execute(select(func.count()).select_from(UsageRecord)
                           .where(UsageRecord.job_id == job["id"])).scalar_one()
    assert n == 1


def test_list_jobs_newest_first_with_filters(client, make_customer, workers):
    _, _, headers = make_customer()
    ids = [client.post("/v1/jobs", json=request_body(), headers=headers).get_json()["id"] for _ in range(3)]
    for jid in ids:
        _poll(client, headers, jid)
    page = client.get("/v1/jobs?limit=2", headers=headers).get_json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = client.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=headers).get_json()
    assert [j["id"] for j in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    assert client.get("/v1/jobs?state=failed", headers=headers).get_json()["items"] == []
    assert len(client.get("/v1/jobs?model=openvla-tiny", headers=headers).get_json()["items"]) == 3


def test_models_list_and_health(client, headers, workers):
    models = {m["name"]: m for m in client.get("/v1/models/list", headers=headers).get_json()["models"]}
    assert models["openvla-tiny"]["ready"] and models["openvla-tiny"]["chunk_length"] == 1
    assert models["openvla-tiny"]["unnorm_keys"] == ["bridge_orig", "fractal20220817_data"]
    assert models["pi0-tiny"]["chunk_length"] == 50
    assert models["openvla-slow"]["ready"] is False
    health = client.get("/health")
    body = health.get_json()
    assert body["database"] is True and body["redis"] is True
    assert body["models"]["openvla-tiny"] is True and "details" not in body
    assert health.status_code == 503  # openvla-slow has no worker in this session


def test_metrics_exposes_latency_jobs_and_queues(client, headers, workers):
    client.post("/v1/inference", json=request_body(), headers=headers)
    text = client.get("/metrics").get_data(as_text=True)
    assert "vla_http_request_duration_seconds_bucket" in text
    assert 'vla_jobs{state="succeeded"}' in text
    assert 'vla_queue_depth{queue="infer.openvla-tiny"}' in text
    assert 'vla_replays{state="succeeded"}' in text


def test_unknown_unnorm_key_is_422_listing_valid(client, headers, workers):
    resp = client.post("/v1/jobs", json=request_body(unnorm_key="nope"), headers=headers)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["field"] == "unnorm_key" and "bridge_orig" in body["detail"]


def test_without_robot_config_the_unnorm_keys_robot_is_used(client, headers, workers):
    body = request_body(robot_config=None, robot_state=None, unnorm_key="fractal20220817_data")
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["safety"]["robot_profile"]["id"] == "google_robot"
    workspace = next(c for c in resp.get_json()["safety"]["checks"] if c["name"] == "workspace")
    assert workspace["status"] == "skipped"  # no robot_state: never reported as passed


def test_reject_mode_returns_no_action(client, headers, workers):
    # The robot already stands outside the workspace: whatever the model says, reject mode refuses it.
    body = request_body(robot_state={"ee_position": [2.0, 2.0, 2.0]}, safety={"mode": "reject"})
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert out["safety"]["decision"] == "rejected" and out["action"]["values"] is None
    assert any(v["check"] == "workspace" for v in out["safety"]["violations"])


def test_classifier_enabled_per_request(client, headers, workers):
    body = request_body(safety={"mode": "monitor", "enable_classifier": True, "safety_threshold": 0.5})
    out = client.post("/v1/inference", json=body, headers=headers).get_json()
    assert out["safety"]["classifier_confidence"] is not None
    assert any(c["type"] == "alignment" for c in out["safety"]["checks"])


def test_safety_stage_fails_closed(client, headers, settings, db_session, workers):
    """If the safety stage itself breaks (here: a corrupt classifier file), the job fails and no action is kept."""
    import dataclasses
    import tempfile

    from workers.stages.safety import run_safety

    # No worker serves openvla-slow in this session, so the job is still in flight when the stage runs.
    job = client.post("/v1/jobs", json=request_body("openvla-slow"), headers=headers).get_json()
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as bad:
        bad.write(b"not a model")
        bad.flush()
        broken = dataclasses.replace(settings, safety_classifier_path=bad.name)
        prev = {"skip": None, "inference": {"actions": [[0.0] * 7], "action_type": "ee_delta", "units": ["m"] * 7,
                                            "model_timings_ms": {}, "inference_ms": 1.0, "inference_done_at": 0.0}}
        state = run_safety(prev, {"job_id": job["id"], "deadline": time.time() + 30, "robot_config": {
            "type": "widowx_250"}, "safety": {"enable_classifier": True}}, broken)
    assert state == "failed"
    db_session.expire_all()
    row = db_session.get(Job, job["id"])
    assert row.state == "failed" and row.result is None and row.error["code"] == "safety_error"


def test_alignment_check_from_import_path_that_raises_rejects(client, headers, settings, db_session, workers):
    """SAFETY_ALIGNMENT_CHECKS loads a plugin by import path; a plugin that raises counts as a failed check."""
    import dataclasses

    from workers.stages.safety import run_safety

    job = client.post("/v1/jobs", json=request_body("openvla-slow"), headers=headers).get_json()
    plugged = dataclasses.replace(settings, safety_alignment_checks=("tests.safety.alignment_plugins:Exploding",))
    prev = {"skip": None, "inference": {"actions": [[0.0] * 7], "action_type": "ee_delta", "units": ["m"] * 7,
                                        "model_timings_ms": {}, "inference_ms": 1.0, "inference_done_at": 0.0}}
    state = run_safety(prev, {"job_id": job["id"], "deadline": time.time() + 30, "robot_config": {
        "type": "widowx_250"}, "robot_state": {"ee_position": [0.3, 0.0, 0.15]},
        "safety": {"enable_classifier": True, "mode": "reject"}}, plugged)
    assert state == "succeeded"
    db_session.expire_all()
    safety = db_session.get(Job, job["id"]).result["safety"]
    assert safety["decision"] == "rejected" and safety["actions"] is None
    plugin = next(c for c in safety["checks"] if c["type"] == "alignment" and "xplod" in c["name"].lower())
    assert plugin["status"] == "failed"
