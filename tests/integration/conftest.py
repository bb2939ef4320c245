"""Real worker processes: a GPU worker per tiny model and a safety worker, for the whole session."""
from __future__ import annotations

import pytest

from tests.integration.live import free_port, gunicorn_argv, serve
from tests.integration.replay_helpers import DataRoot
from tests.integration.workers import LIVE, gpu_worker, safety_worker, wait_ready

# Short enough that the SIGKILL test sees its message come back quickly; every job here takes well under it.
VISIBILITY_S = "4"


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test():
    """Stop the workers a test started and left running (it failed before its own cleanup); workers of
    session- and module-scoped fixtures were started before this snapshot and are left alone."""
    before = set(LIVE)
    yield
    for worker in LIVE - before:
        worker.stop()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="session")
def workers(redis_client, log_dir):
    env = {"BROKER_VISIBILITY_TIMEOUT_S": VISIBILITY_S}
    procs = [gpu_worker("openvla-tiny", log_dir, **env).start(), gpu_worker("pi0-tiny", log_dir, **env).start(),
             safety_worker(log_dir, **env).start()]
    try:
        wait_ready(redis_client, "openvla-tiny", worker=procs[0])
        wait_ready(redis_client, "pi0-tiny", worker=procs[1])
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture()
def customer(make_customer):
    """A fresh enterprise customer: (name, key, headers)."""
    return make_customer("enterprise")


@pytest.fixture()
def headers(customer):
    """Auth headers of the test's customer."""
    return customer[2]


@pytest.fixture()
def data_root(settings, customer):
    """A folder in the test customer's own dataset root (REPLAY_DATA_ROOT/<customer>/), removed after."""
    root = DataRoot(settings.replay_data_root / customer[0])
    yield root
    root.remove()


@pytest.fixture(scope="session")
def live_url(tmp_path_factory):
    """The web app under a real gunicorn, for clients that speak HTTP over a socket."""
    port = free_port()
    with serve(gunicorn_argv(port), port, tmp_path_factory.mktemp("gunicorn") / "web.log"):
        yield f"http://127.0.0.1:{port}"
