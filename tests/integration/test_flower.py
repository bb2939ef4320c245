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
