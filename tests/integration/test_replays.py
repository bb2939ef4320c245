"""Replays end to end: real app, PostgreSQL, Redis and GPU worker processes, datasets on disk."""
from __future__ import annotations

import csv
import io
import json
import time
import uuid

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from tests.integration.replay_helpers import FORMATS, poll_replay, upload_bytes, write_dataset
from tests.workers.replays.broken import truncate
from web.metrics import queue_depth
from workers.store.models import Replay, ReplayStep
from workers.wire.queues import infer_queue

WIDOWX = {"type": "widowx_250"}


def _submit(client, headers, data_root, path, **spec):
    body = {"model": "openvla-tiny", "dataset": {"path": data_root.rel(path)}, **spec}
    return client.post("/v1/replays", json=body, headers=headers)


def _upload(client, headers, path, archive="zip", extra_headers=None, **spec):
    buf, name = upload_bytes(path, archive)
    return client.post("/v1/replays", data={"file": (buf, name), "spec": json.dumps({"model": "openvla-tiny", **spec})},
                       headers={**headers, **(extra_headers or {})}, content_type="multipart/form-data")


def _check_done(done: dict, total: int) -> None:
    assert done["state"] == "succeeded", done
    assert done["progress"]["done_steps"] == total == done["progress"]["total_steps"]
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["steps_per_second"] > 0
    summary = done["summary"]
    assert summary["steps"] == total == summary["compared_steps"] + summary["missing_predictions"]
    assert summary["mse"] >= 0 and summary["mae"] >= 0 and len(summary["per_dim"]) == 7
    assert set(summary["sign_agreement"]) == {"0", "1", "2"} and 0 <= summary["gripper_agreement"] <= 1
    assert {"flagged_steps", "modified", "rejected", "by_flag"} <= set(summary["safety"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_server_path_each_format(client, headers, data_root, workers, fmt):
    path, total = write_dataset(fmt, data_root.dir)
    resp = _submit(client, headers, data_root, path, robot_config=WIDOWX)
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    assert resp.headers["Location"] == f"/v1/replays/{body['id']}"
    assert body["state"] == "queued" and body["progress"]["total_steps"] == total
    assert body["dataset"]["format"].startswith(fmt)  # e.g. "lerobot-v2.1", "robomimic-hdf5"
    _check_done(poll_replay(client, headers, body["id"]), total)


@pytest.mark.parametrize("fmt", FORMATS)
def test_upload_each_format(client, headers, data_root, workers, settings, fmt):
    path, total = write_dataset(fmt, data_root.dir, episodes=1, steps=6)
    resp = _upload(client, headers, path, archive="tar" if fmt == "lerobot" else "zip", robot_config=WIDOWX)
    assert resp.status_code == 202, resp.get_json()
    done = poll_replay(client, headers, resp.get_json()["id"])
    _check_done(done, total)
    # The upload is deleted once the replay has ended; its rows stay readable.
    upload_folder = settings.replay_upload_dir / done["dataset"]["path"].split("/")[0]
    # The worker commits the end state, then deletes the upload: allow it that moment.
    end = time.monotonic() + 10
    while upload_folder.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not upload_folder.exists()
    assert client.get(f"/v1/replays/{done['id']}/results?format=csv", headers=headers).status_code == 200


def test_without_robot_config_every_step_is_judged_by_the_datasets_robot(client, headers, data_root, workers):
    """Issue 21: a replay naming no robot skipped the safety stage and its summary read 'violations: 0'. Now the
    dataset's own robot_type picks the profile (monitor mode unless asked), and every row names it."""
    path, total = write_dataset("lerobot", data_root.dir, episodes=1, steps=6)
    info_path = path / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "robot_type": "Franka Panda"}))
    body = _submit(client, headers, data_root, path).get_json()
    assert body["options"]["robot_config"] == {"type": "franka_panda"}, body
    assert body["options"]["safety"]["mode"] == "monitor" and body["options"]["robot_source"].startswith("dataset")
    done = poll_replay(client, headers, body["id"])
    assert done["state"] == "succeeded", done
    rows = [json.loads(line) for line in
            client.get(f"/v1/replays/{body['id']}/results", headers=headers).get_data(as_text=True).splitlines()]
    assert len(rows) == total and all(r["safety_decision"] for r in rows)
    assert {r["safety_profile"].split("@")[0] for r in rows} == {"franka_panda"}
    assert all(r["predicted_action"] == r["raw_action"] for r in rows)  # monitor: flagged, never changed
    safety = done["summary"]["safety"]
    assert safety["judged_steps"] == total and safety["unjudged_steps"] == 0
    assert list(safety["profiles"]) == [rows[0]["safety_profile"]]
    # A robot we have no profile of: SAFETY_DEFAULT_ROBOT judges, in the mode the request names.
    info_path.write_text(json.dumps({**info, "robot_type": "koch"}))
    body = _submit(client, headers, data_root, path, safety={"mode": "clamp"}).get_json()
    assert body["options"]["robot_config"] == {"type": "widowx_250"} and body["options"]["robot_source"] == "default"
    assert body["options"]["safety"]["mode"] == "clamp"
    assert poll_replay(client, headers, body["id"])["summary"]["safety"]["judged_steps"] == total


def test_results_exports_and_plot(client, headers, data_root, workers):
    path, total = write_dataset("npz", data_root.dir, episodes=3, steps=7)
    # The recorded states are random, so as end-effector positions they lie outside the WidowX workspace:
    # the shield rejects those actions, and the rows say so.
    rid = _submit(client, headers, data_root, path, robot_config=WIDOWX, episodes=[2, 0],
                  robot_state_source="dataset").get_json()["id"]
    total = 14
    done = poll_replay(client, headers, rid)
    assert done["state"] == "succeeded" and done["progress"]["done_steps"] == total, done
    resp = client.get(f"/v1/replays/{rid}/results?format=jsonl", headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
    assert [(r["episode"], r["step"]) for r in rows] == [(e, s) for e in (0, 2) for s in range(7)]
    rejected = [r for r in rows if r["safety_decision"] == "rejected"]
    assert rejected and all(r["predicted_action"] is None and r["safety_flags"] for r in rejected)
    assert done["summary"]["safety"]["rejected"] == len(rejected)
    resp = client.get(f"/v1/replays/{rid}/results?format=csv", headers=headers)
    assert resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(table) == total and json.loads(table[0]["recorded_action"]) == rows[0]["recorded_action"]
    resp = client.get(f"/v1/replays/{rid}/results?format=parquet", headers=headers)
    assert resp.mimetype == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(resp.get_data())).num_rows == total
    assert client.get(f"/v1/replays/{rid}/results?format=xml", headers=headers).status_code == 422
    png = client.get(f"/v1/replays/{rid}/plot.png", headers=headers)
    assert png.status_code == 200 and png.mimetype == "image/png" and png.get_data()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunk_model_with_state_and_camera_map(client, headers, data_root, workers):
    path, total = write_dataset("jsonl", data_root.dir, episodes=1, steps=4, cameras=("wrist", "front"))
    resp = _submit(client, headers, data_root, path, model="pi0-tiny", robot_config=WIDOWX,
                   camera_map={"front": "base_0_rgb", "wrist": "left_wrist_0_rgb"}, safety={"mode": "monitor"})
    assert resp.status_code == 202, resp.get_json()
    _check_done(poll_replay(client, headers, resp.get_json()["id"]), total)


def _broken(kind, root):
    if kind == "truncated_npz":
        path, _ = write_dataset("npz", root.dir)
        truncate(path, 0.4)
        return {"dataset": {"path": root.rel(path)}}, "d.npz"
    if kind == "missing_key":
        path, _ = write_dataset("jsonl", root.dir)
        lines = (path / "episodes.jsonl").read_text().splitlines()
        lines[3] = json.dumps({k: v for k, v in json.loads(lines[3]).items() if k != "action"})
        (path / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        return {"dataset": {"path": root.rel(path)}}, "action"
    if kind == "unknown_episode":
        path, _ = write_dataset("npz", root.dir)
        return {"dataset": {"path": root.rel(path)}, "episodes": [0, 7]}, "episodes"
    if kind == "outside_root":
        return {"dataset": {"path": "../../../etc/passwd"}}, "dataset.path"
    if kind == "missing":
        return {"dataset": {"path": "no/such/dataset.npz"}}, "dataset.path"
    return {"dataset": {"path": root.rel(write_dataset("npz", root.dir)[0])}, "camera_map": {"nope": "x"}}, "camera_map"


@pytest.mark.parametrize("kind", ["truncated_npz", "missing_key", "unknown_episode", "outside_root", "missing",
                                  "bad_camera"])
def test_broken_dataset_refused_before_queueing(client, headers, data_root, redis_client, db_session, kind):
    # openvla-slow has no worker here, so anything enqueued would still sit in its queue.
    body, field = _broken(kind, data_root)
    queue = infer_queue("openvla-slow", "replay")
    before = queue_depth(redis_client, queue)
    resp = client.post("/v1/replays", json={"model": "openvla-slow", **body}, headers=headers)
    # Outside the customer's root and absent are the same 404 (tenancy); a broken dataset is a 422.
    assert resp.status_code == (404 if kind in ("outside_root", "missing") else 422), resp.get_json()
    problem = resp.get_json()
    assert resp.mimetype == "application/problem+json" and field in (problem["field"] + problem["detail"])
    assert queue_depth(redis_client, queue) == before
    listed = client.get("/v1/replays", headers=headers).get_json()["items"]
    assert listed == []


def test_broken_upload_refused_and_not_kept(client, headers, data_root, settings):
    path, _ = write_dataset("robomimic", data_root.dir)
    truncate(path, 0.3)
    before = set(settings.replay_upload_dir.iterdir()) if settings.replay_upload_dir.exists() else set()
    resp = _upload(client, headers, path, model="openvla-slow")
    assert resp.status_code == 422 and "HDF5" in resp.get_json()["detail"]
    assert set(settings.replay_upload_dir.iterdir()) == before
    bad = client.post("/v1/replays", data={"file": (io.BytesIO(b"x"), "d.exe"), "spec": '{"model": "openvla-tiny"}'},
                      headers=headers, content_type="multipart/form-data")
    assert bad.status_code == 422 and bad.get_json()["field"] == "file"


def test_bad_requests(client, headers, data_root):
    path, _ = write_dataset("npz", data_root.dir)
    resp = _submit(client, headers, data_root, path, model="openvla-tinyy")
    problem = resp.get_json()
    assert resp.status_code == 422 and problem["field"] == "model" and "openvla-tiny" in problem["detail"]
    resp = _submit(client, headers, data_root, path, robot_state_source="imu")
    assert resp.status_code == 422 and "robot_state_source" in resp.get_json()["errors"]
    resp = _submit(client, headers, data_root, path, robot_config={"type": "r2d2"})
    assert resp.status_code == 422 and resp.get_json()["type"].endswith("invalid_robot_config")
    assert client.post("/v1/replays", json={"model": "openvla-tiny", "dataset": {"path": "x"}}).status_code == 401


def test_cancel_stops_a_running_replay(client, headers, data_root, workers, db_session):
    path, total = write_dataset("npz", data_root.dir, episodes=4, steps=100, image_hw=(32, 32))
    rid = _submit(client, headers, data_root, path).get_json()["id"]
    poll_replay(client, headers, rid, until=("running",))
    resp = client.delete(f"/v1/replays/{rid}", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["state"] == "canceled"
    time.sleep(1.0)  # at most one window was in flight when we canceled
    count = lambda: db_session.execute(select(func.count()).select_from(ReplayStep).where(  # noqa: E731
        ReplayStep.replay_id == uuid.UUID(rid))).scalar_one()
    settled = count()
    time.sleep(1.0)
    assert count() == settled < total
    assert client.delete(f"/v1/replays/{rid}", headers=headers).status_code == 409


def test_isolation_and_listing(client, headers, make_customer, data_root):
    path, _ = write_dataset("npz", data_root.dir)
    first = _submit(client, headers, data_root, path, model="openvla-slow").get_json()["id"]
    second = _submit(client, headers, data_root, path, model="openvla-slow").get_json()["id"]
    assert [r["id"] for r in client.get("/v1/replays", headers=headers).get_json()["items"]] == [second, first]
    other = make_customer("enterprise")[2]
    for url in (f"/v1/replays/{first}", f"/v1/replays/{first}/results", f"/v1/replays/{first}/plot.png"):
        assert client.get(url, headers=other).status_code == 404
    assert client.delete(f"/v1/replays/{first}", headers=other).status_code == 404
    assert client.get("/v1/replays", headers=other).get_json()["items"] == []
    assert client.get("/v1/replays/not-a-uuid", headers=headers).status_code == 404
    for rid in (first, second):  # nothing is left queued for a later openvla-slow worker
        assert client.delete(f"/v1/replays/{rid}", headers=headers).get_json()["state"] == "canceled"


def test_idempotency_key(client, headers, data_root, db_session):
    path, _ = write_dataset("npz", data_root.dir)
    key = {**headers, "Idempotency-Key": "replay-key-1"}
    body = {"model": "openvla-slow", "dataset": {"path": data_root.rel(path)}}
    a = client.post("/v1/replays", json=body, headers=key)
    b = client.post("/v1/replays", json=body, headers=key)
    assert a.status_code == b.status_code == 202 and a.get_json()["id"] == b.get_json()["id"]
    other = client.post("/v1/replays", json={**body, "episodes": [0]}, headers=key)
    assert other.status_code == 422 and other.get_json()["field"] == "Idempotency-Key"
    n = db_session.execute(select(func.count()).select_from(Replay).where(Replay.idempotency_key == "replay-key-1"))
    assert n.scalar_one() == 1
    up = {"Idempotency-Key": "replay-key-2"}
    u1, u2 = (_upload(client, headers, path, extra_headers=up, model="openvla-slow") for _ in range(2))
    assert u1.get_json()["id"] == u2.get_json()["id"]
    for rid in (a.get_json()["id"], u1.get_json()["id"]):
        assert client.delete(f"/v1/replays/{rid}", headers=headers).status_code == 200


def test_runtime_dataset_error_fails_the_replay(client, headers, data_root, workers):
    # Submission decodes each episode's first step only; a frame broken further in is found while running.
    path, _ = write_dataset("jsonl", data_root.dir, episodes=1, steps=12)
    (path / "frames/ep000/front_0010.png").write_bytes(b"not a png")
    resp = _submit(client, headers, data_root, path)
    assert resp.status_code == 202, resp.get_json()
    done = poll_replay(client, headers, resp.get_json()["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "dataset_error", done
    assert "front_0010.png" in done["error"]["field"] + done["error"]["detail"]


def test_dataset_that_does_not_fit_the_model_fails_clearly(client, headers, data_root, workers):
    path, _ = write_dataset("robomimic", data_root.dir, episodes=1, steps=3)  # 9-dim state; pi0-tiny takes 8
    done = poll_replay(client, headers, _submit(client, headers, data_root, path, model="pi0-tiny").get_json()["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "invalid_input" and done["error"]["field"] == "state"


def test_unnorm_key_checked_and_list_filtered_by_state(client, headers, data_root, workers):
    path, _ = write_dataset("npz", data_root.dir, episodes=1, steps=3)
    bad = _submit(client, headers, data_root, path, robot_config=WIDOWX, unnorm_key="nope")
    assert bad.status_code == 422 and bad.get_json()["field"] == "unnorm_key"
    assert "bridge_orig" in bad.get_json()["detail"]
    rid = _submit(client, headers, data_root, path, robot_config=WIDOWX,
                  unnorm_key="fractal20220817_data").get_json()["id"]
    assert poll_replay(client, headers, rid)["state"] == "succeeded"
    ids = [r["id"] for r in client.get("/v1/replays?state=succeeded", headers=headers).get_json()["items"]]
    assert ids == [rid]
    assert client.get("/v1/replays?state=failed", headers=headers).get_json()["items"] == []


def test_pi0_replay_steps_are_seeded(client, headers, data_root, workers):
    """A step recomputed after a crash must give the same chunk, and two replays of one dataset agree."""
    path, _ = write_dataset("npz", data_root.dir, episodes=1, steps=3, state_dim=8)
    runs = []
    for _ in range(2):
        rid = _submit(client, headers, data_root, path, model="pi0-tiny").get_json()["id"]
        assert poll_replay(client, headers, rid)["state"] == "succeeded"
        rows = client.get(f"/v1/replays/{rid}/results?format=jsonl", headers=headers).get_data(as_text=True)
        runs.append([json.loads(line)["predicted_action"] for line in rows.splitlines()])
    assert runs[0] == runs[1]
