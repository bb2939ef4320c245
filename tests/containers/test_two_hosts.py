"""GPU workers on another host: two worker containers for one model on a second container network that reaches
the first only through PostgreSQL and Redis (attached to both, as a broker and a database on a LAN would be).
One is stopped under load; the other takes its share: no accepted job stuck, no usage row twice, and the
survivor serves a new request within 5 s."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.containers import stack
from tests.containers.test_dev_stack import _png

MODEL = "openvla-tiny"
NET = f"{stack.PROJECT}_gpuhost"
TERMINAL = ("succeeded", "failed", "expired", "canceled", "rejected")


def _ip_on(container: str, network: str) -> str:
    info = json.loads(stack.podman("inspect", container).stdout)[0]
    return info["NetworkSettings"]["Networks"][network]["IPAddress"]


@pytest.fixture()
def remote_workers(dev):
    pg, redis = stack.container_of("postgres"), stack.container_of("redis")
    local_worker = stack.container_of("worker-openvla-tiny")
    names = [f"{stack.PROJECT}_remote-gpu-{i}" for i in range(2)]
    stack.podman("network", "create", NET)
    try:
        for c in (pg, redis):
            stack.podman("network", "connect", NET, c)
        db_url = f"postgresql+psycopg2://postgres:dev-only-not-a-secret@{_ip_on(pg, NET)}:5432/vlaapi"
        redis_url = f"redis://{_ip_on(redis, NET)}:6379/0"
        # Only the remote workers serve the model during this test.
        stack.podman("stop", "-t", "15", local_worker, timeout=60)
        for name in names:
            stack.podman("run", "-d", "--name", name, "--hostname", name, "--network", NET,
                         "-e", f"DATABASE_URL={db_url}", "-e", f"REDIS_URL={redis_url}", "-e", "VLAAPI_ENV=development",
                         "-e", "ENABLED_MODELS=openvla-tiny,pi0-tiny", "-e", "WORKER_CONCURRENCY=4",
                         f"{stack.IMAGE}:dev", "worker", MODEL)
        for name in names:
            stack.wait_healthy(name, timeout=180)
        yield names
    finally:
        for name in names:
            stack.podman("rm", "-f", "-t", "5", name, check=False, timeout=60)
        for c in (pg, redis):
            stack.podman("network", "disconnect", NET, c, check=False)
        stack.podman("network", "rm", "-f", NET, check=False)
        stack.podman("start", local_worker, check=False)


def _submit(dev, i: int) -> str:
    body = {"model": MODEL, "image": _png(), "instruction": f"pick up block {i}",
            "robot_config": {"type": "widowx_250"}}
    resp = requests.post(dev.url + "/v1/jobs", json=body, headers=dev.headers, timeout=30)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _succeeded_lines(name: str) -> int:
    return stack.logs(name).count("succeeded in")


def test_survivor_takes_the_share(dev, remote_workers):
    stopped, survivor = remote_workers
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda i: _submit(dev, i), range(24)))
        stack.podman("stop", "-t", "10", stopped, timeout=60)  # SIGTERM under load: drains, then exits
        before = _succeeded_lines(survivor)
        t0 = time.monotonic()
        resp = requests.post(dev.url + "/v1/inference", headers=dev.headers, timeout=30,
                             json={"model": MODEL, "image": _png(), "instruction": "after the stop"})
        served_s = time.monotonic() - t0
        later = list(pool.map(lambda i: _submit(dev, i), range(24, 48)))
    assert resp.status_code == 200, resp.text
    assert served_s <= 5.0, f"the survivor took {served_s:.1f} s"
    ids = first + later
    end, states = time.monotonic() + 120, {}
    while time.monotonic() < end:
        states = {j: requests.get(f"{dev.url}/v1/jobs/{j}", headers=dev.headers, timeout=10).json()["state"]
                  for j in ids}
        if all(s in TERMINAL for s in states.values()):
            break
        time.sleep(1)
    stuck = [j for j, s in states.items() if s not in TERMINAL]
    assert not stuck, f"{len(stuck)} jobs stuck"
    assert _succeeded_lines(survivor) > before  # it served work after the other stopped
    quoted = ",".join(f"'{j}'" for j in ids)
    dup = stack.psql(f"SELECT count(*) - count(DISTINCT job_id) FROM usage_records WHERE job_id IN ({quoted})")
    assert int(dup) == 0
    succeeded = sum(1 for s in states.values() if s == "succeeded")
    print(f"\n{len(ids)} jobs: {succeeded} succeeded, 0 stuck, 0 duplicate usage rows; "
          f"the survivor served a new request {served_s:.2f} s after the stop")
