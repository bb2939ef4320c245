"""Flower, the queue dashboard, runs behind basic auth with credentials from the environment."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests

from ops.lifeline import lifeline
from tests.integration.workers import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flower_requires_basic_auth(tmp_path):
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
    finally:
        proc.terminate()
        proc.wait(timeout=10)
