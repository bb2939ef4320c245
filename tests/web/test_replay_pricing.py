"""Replays are charged first, priced by their steps and capped per tier; a refused replay costs nothing and
leaves no upload behind. Datasets are real files read by the real probe child; openvla-slow has no worker,
so an accepted replay stays queued (and counts as running for the concurrency cap)."""
from __future__ import annotations

import dataclasses
import io
import math
import uuid

import pytest

from ops.bench.hostile import npz_bomb
from tests.integration.replay_helpers import upload_bytes, write_dataset
from web.app import create_app
from workers.store.db import session_scope
from workers.store.models import Tier

MODEL = "openvla-slow"


@pytest.fixture()
def tier(settings):
    """A tier of its own (rows are the operator's to edit): small quotas and caps that tests can reach."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.database_url) as s:
        s.add(Tier(name=name, requests_per_minute=100, requests_per_day=5, requests_per_month=1000,
                   max_in_flight=10, max_replay_steps=60, max_concurrent_replays=1, max_upload_mb=1))
    return name


@pytest.fixture()
def env(settings, tmp_path, make_customer, tier):
    uploads = tmp_path / "uploads"
    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(
        settings, replay_data_root=tmp_path / "datasets", replay_upload_dir=uploads)})
    name, _, headers = make_customer(tier)
    own = tmp_path / "datasets" / name
    own.mkdir(parents=True)
    return app.test_client(), headers, own, uploads


def _day_used(client, headers) -> int:
    return client.get("/v1/usage", headers=headers).get_json()["requests_today"]


def _post(client, headers, path, **spec):
    return client.post("/v1/replays", json={"model": MODEL, "dataset": {"path": path}, **spec}, headers=headers)


def test_replay_costs_its_steps(env, settings):
    client, headers, own, _ = env
    path, total = write_dataset("npz", own, episodes=2, steps=10)
    before = _day_used(client, headers)
    resp = _post(client, headers, path.name)
    assert resp.status_code == 202, resp.get_json()
    cost = 1 + math.ceil(total / settings.replay_steps_per_unit)
    assert _day_used(client, headers) - before == cost
    assert resp.get_json()["usage"]["requests_today"] - before == cost


def test_steps_over_the_tier_cap_are_refused_and_refunded(env):
    client, headers, own, _ = env
    path, total = write_dataset("npz", own, episodes=7, steps=10)  # 70 steps > 60
    before = _day_used(client, headers)
    resp = _post(client, headers, path.name)
    assert resp.status_code == 422 and resp.get_json()["type"].endswith("replay_too_long"), resp.get_json()
    assert _day_used(client, headers) == before
    assert _post(client, headers, path.name, episodes=[0, 1]).status_code == 202  # 20 steps fit


def test_replay_over_the_day_quota_is_429_and_refunded(env):
    client, headers, own, _ = env
    path, _ = write_dataset("npz", own, episodes=5, steps=10)
    before = _day_used(client, headers)
    resp = _post(client, headers, path.name)  # 1 + 5 units: over the day's 5
    assert resp.status_code == 429 and resp.get_json()["type"].endswith("quota_exceeded"), resp.get_json()
    assert _day_used(client, headers) == before


def test_concurrent_replays_capped_per_tier(env):
    client, headers, own, _ = env
    path, _ = write_dataset("npz", own, episodes=1, steps=5)
    assert _post(client, headers, path.name).status_code == 202
    before = _day_used(client, headers)
    resp = _post(client, headers, path.name)
    assert resp.status_code == 429 and resp.get_json()["type"].endswith("too_many_replays")
    assert _day_used(client, headers) == before


def test_upload_over_the_tier_cap_is_refused_and_deleted(env):
    client, headers, _, uploads = env
    big = io.BytesIO(b"PK\x03\x04" + b"\0" * (1024 * 1024 + 10))
    before = _day_used(client, headers)
    resp = client.post("/v1/replays", data={"file": (big, "d.npz"), "spec": f'{{"model": "{MODEL}"}}'},
                       headers=headers, content_type="multipart/form-data")
    assert resp.status_code == 422 and resp.get_json()["field"] == "file"
    assert _day_used(client, headers) == before
    assert not uploads.exists() or not any(uploads.iterdir())


def test_broken_upload_is_deleted_and_refunded(env, tmp_path):
    client, headers, _, uploads = env
    path, _ = write_dataset("jsonl", tmp_path / "src", episodes=1, steps=4)
    (path / "episodes.jsonl").write_text("{not json\n")
    buf, name = upload_bytes(path, "zip")
    before = _day_used(client, headers)
    resp = client.post("/v1/replays", data={"file": (buf, name), "spec": f'{{"model": "{MODEL}"}}'},
                       headers=headers, content_type="multipart/form-data")
    assert resp.status_code == 422, resp.get_json()
    assert _day_used(client, headers) == before
    assert not any(uploads.iterdir())


def _peak_rss_kb() -> int:
    return int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")))


def test_npz_bomb_is_refused_by_the_child_not_the_web(env, tmp_path):
    """An NPZ member that inflates ~1000:1 on load: the probe child hits its limits and dies or refuses;
    this (web) process's peak memory stays put and the upload is deleted."""
    client, headers, _, uploads = env
    name, data = npz_bomb()
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    before = _peak_rss_kb()
    resp = client.post("/v1/replays", data={"file": (io.BytesIO(data), name), "spec": f'{{"model": "{MODEL}"}}'},
                       headers=headers, content_type="multipart/form-data")
    assert resp.status_code == 422 and resp.get_json()["field"] == "file", resp.get_json()
    assert _peak_rss_kb() - before < 64 * 1024
    assert not any(uploads.iterdir())
