"""A child armed with ops.lifeline dies when its parent is SIGKILLed; an unarmed one would live on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from tests.conftest import _unwatched_db
from tests.integration.workers import ROOT

PARENT = """
import signal, subprocess, sys, time
from ops.lifeline import lifeline
armed = sys.argv[1] == "armed"
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                         preexec_fn=lifeline() if armed else None)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead; init reaps it soon
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("armed", [True, False])
def test_a_child_dies_with_its_sigkilled_parent_only_when_armed(armed):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "armed" if armed else "bare"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        end = time.monotonic() + 5
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert _alive(child) is (not armed)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_suite_avoids_a_redis_database_someone_is_connected_to(redis_client):
    """A stray worker from a killed run on database N must not share this run's queues (CI met one)."""
    base = redis_client.connection_pool.connection_kwargs
    url = f"redis://{base['host']}:{base['port']}"
    first = _unwatched_db(url)
    squatter = redis.Redis(host=base["host"], port=base["port"], db=first)
    squatter.ping()  # a connected client on that database, like a worker blocked in BRPOP
    try:
        assert _unwatched_db(url) != first
    finally:
        squatter.close()
