"""The container tests run only under `make test-containers` (VLAAPI_CONTAINER_TESTS=1): `make test` does not
collect them, so it needs no podman. The images are built by ops/containers/build.sh before pytest starts."""
from __future__ import annotations

import os
import re
import time

import pytest
import requests

from tests.containers import stack

if not os.environ.get("VLAAPI_CONTAINER_TESTS"):
    collect_ignore_glob = ["test_*.py"]

SERVICES = ("postgres", "redis", "web-dev", "openpi-dev", "worker-openvla-tiny", "worker-pi0-tiny", "safety-dev",
            "reaper-dev", "flower-dev")
APP_SERVICES = SERVICES[2:]


class Dev:
    def __init__(self, ports: dict[str, int], key: str, up_s: float, health_s: float):
        self.ports, self.key, self.up_s, self.health_s = ports, key, up_s, health_s
        self.url = f"http://127.0.0.1:{ports['WEB_PORT']}"
        self.ws = f"ws://127.0.0.1:{ports['OPENPI_PORT']}/v1/openpi"
        self.headers = {"Authorization": f"Bearer {key}"}


def _wait_health_200(url: str, timeout: float) -> None:
    end, last = time.monotonic() + timeout, None
    while time.monotonic() < end:
        try:
            last = requests.get(url + "/health", timeout=5)
            if last.status_code == 200:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"/health not 200 after {timeout:.0f} s: {getattr(last, 'text', last)}")


@pytest.fixture(scope="session")
def dev():
    """The dev profile, up; taken down with its volumes afterwards, whatever happened."""
    ports = {"WEB_PORT": stack.free_port(), "OPENPI_PORT": stack.free_port(), "FLOWER_PORT": stack.free_port()}
    stack.compose(ports, "down", "-v", check=False)
    t0 = time.monotonic()
    try:
        # Two phases, because podman 4.3 cannot start a container whose dependency has dependencies of its own
        # (`--requires`: "depends on container ... not found in input list") and ignores health conditions:
        # the servers and the one-shot migration first, then the rest once it has exited 0. Docker Compose
        # does the same from the file's depends_on with one `up`.
        stack.compose(ports, "up", "-d", "--no-deps", "postgres", "redis", "migrate-dev", timeout=300)
        code = stack.podman("wait", stack.container_of("migrate-dev"), timeout=300).stdout.strip()
        assert code == "0", stack.logs(stack.container_of("migrate-dev"))
        stack.compose(ports, "up", "-d", "--no-deps", *APP_SERVICES, timeout=600)
        up_s = time.monotonic() - t0
        _wait_health_200(f"http://127.0.0.1:{ports['WEB_PORT']}", 240)
        health_s = time.monotonic() - t0
        banner = stack.logs(stack.container_of("migrate-dev"))
        match = re.search(r"Demo API key \(customer 'demo', tier pro\): (\S+)", banner)
        assert match, banner
        assert "curl -s -X POST" in banner
        print(f"\ncompose up: {up_s:.1f} s; /health 200 after {health_s:.1f} s")
        yield Dev(ports, match.group(1), up_s, health_s)
    finally:
        if os.environ.get("VERBOSE"):
            for name in [c["Names"][0] for c in stack.containers()]:
                print(f"---- {name} (last lines)\n{stack.logs(name)[-1500:]}")
        stack.compose(ports, "down", "-v", "-t", "15", check=False, timeout=300)


def pytest_sessionfinish(session, exitstatus):
    """After the stack is down: nothing of ours may remain (containers, networks, volumes)."""
    if not os.environ.get("VLAAPI_CONTAINER_TESTS"):
        return
    left = {k: v for k, v in stack.leftovers().items() if v}
    if left:
        print(f"\nLEFT BEHIND after down: {left}")
        session.exitstatus = 1
    else:
        print("\nnothing left behind: podman ps -a / network ls / volume ls show nothing of the project")
