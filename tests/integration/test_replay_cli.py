"""`vlaapi replay ...` against a real gunicorn serving web.app:create_app(), with real workers behind it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from ops.cli import main
from ops.lifeline import lifeline
from tests.integration.replay_helpers import DataRoot, write_dataset
from tests.integration.workers import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("gunicorn") / "web.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
                             "--threads", "4", "--bind", f"127.0.0.1:{port}", "web.app:create_app()"],
                            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lifeline())
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            try:
                requests.get(url + "/openapi.json", timeout=5)
                break
            except requests.RequestException:  # still importing the app
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


@pytest.fixture()
def customer(make_customer):
    return make_customer("enterprise")


@pytest.fixture()
def data_root(settings, customer):
    root = DataRoot(settings.replay_data_root / customer[0])
    yield root
    root.remove()


def _run(server, key, *args):
    result = CliRunner().invoke(main, ["replay", "--api-url", server, "--api-key", key, *args])
    return result


def test_cli_upload_wait_results_plot(server, customer, data_root, workers, tmp_path):
    key = customer[1]
    path, total = write_dataset("jsonl", data_root.dir, episodes=2, steps=6)  # a directory: zipped on the fly
    res = _run(server, key, "submit", str(path), "--model", "openvla-tiny", "--episodes", "0,1",
               "--robot-type", "widowx_250", "--wait")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    rid = lines[0]
    assert json.loads("\n".join(lines[1:]))["steps"] == total
    assert f"succeeded: {total}/{total} steps" in res.stderr
    res = _run(server, key, "results", rid, "--format", "csv", "-o", str(tmp_path / "r.csv"))
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "r.csv").read_text().splitlines()) == total + 1  # header
    res = _run(server, key, "results", rid, "--format", "parquet", "-o", str(tmp_path / "r.parquet"))
    assert pq.read_table(tmp_path / "r.parquet").num_rows == total
    res = _run(server, key, "results", rid)
    assert len(res.stdout.splitlines()) == total
    res = _run(server, key, "plot", rid, "-o", str(tmp_path / "p.png"))
    assert res.exit_code == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_server_path_and_errors(server, customer, data_root, workers):
    key = customer[1]
    path, total = write_dataset("npz", data_root.dir, episodes=1, steps=5)
    res = _run(server, key, "submit", "--server-path", data_root.rel(path), "--model", "openvla-tiny", "--wait")
    assert res.exit_code == 0, res.output
    res = _run(server, key, "submit", "--server-path", "../outside.npz", "--model", "openvla-tiny")
    assert res.exit_code != 0 and "404" in res.output and "dataset.path" in res.output
    res = _run(server, "vla_live_bogus", "submit", "--server-path", data_root.rel(path), "--model", "openvla-tiny")
    assert res.exit_code != 0 and "401" in res.output
