"""Flower, the queue dashboard, runs behind basic auth with credentials from the environment."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests

from ops.lifeline import lifeline
from tests.helpers import request_body
from tests.integration.workers import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flower_requires_basic_auth_and_turns_task_events_on(tmp_path, client, headers, workers):
    """Workers start with task events off (they cost CPU per task); Flower switches them on, so its task
    views still fill: a job submitted after Flower is up shows in /api/tasks."""
    port = _free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:s3cret"}
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower", f"--port={port}",
           "--address=127.0.0.1", f"--basic-auth={env['FLOWER_BASIC_AUTH']}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(tmp_path / "flower.log", "wb"),
                            stderr=subprocess.STDOUT, preexec_fn=lifeline())
    try:
        url = f"http://127.0.0.1:{port}/api/workers"
        for _ in range(100):
            try:
                resp = requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert resp.status_code == 401
        assert requests.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert requests.get(url, auth=("ops", "s3cret"), timeout=5).status_code == 200
        seen: set[str] = set()
        end = time.monotonic() + 60
        while "vla.infer" not in seen and time.monotonic() < end:
            assert client.post("/v1/inference", json=request_body(), headers=headers).status_code == 200
            tasks = requests.get(f"http://127.0.0.1:{port}/api/tasks", auth=("ops", "s3cret"), timeout=5).json()
            seen = {t.get("name") for t in tasks.values()}
            time.sleep(0.5)
        assert {"vla.infer", "vla.safety"} <= seen, seen
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_flower_metrics_are_its_own_and_behind_its_credentials(tmp_path):
    """Issue 21 item 8: under `make run` the web's /metrics carried 116 flower_* series through the shared
    multiprocess directory, and Flower's /metrics and /healthcheck answered anyone. Started as the Procfile
    starts it (python -m ops.flower), with the directory set as `make run` sets it."""
    port = _free_port()
    prom = tmp_path / "prometheus"
    prom.mkdir()
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:a-long-s3cret-value", "FLOWER_PORT": str(port),
           "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    proc = subprocess.Popen([sys.executable, "-m", "ops.flower"], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "flower.log", "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=lifeline())
    auth = ("ops", "a-long-s3cret-value")
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                requests.get(f"{base}/healthcheck", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        for path in ("/metrics", "/healthcheck"):
            assert requests.get(base + path, timeout=5).status_code == 401, path
            assert requests.get(base + path, auth=("ops", "wrong"), timeout=5).status_code == 401, path
            assert requests.get(base + path, auth=auth, timeout=5).status_code == 200, path
        assert "flower_" in requests.get(f"{base}/metrics", auth=auth, timeout=5).text
        assert not list(prom.iterdir()), "Flower wrote into the web's multiprocess directory"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
