"""Driving the compose stack with podman for the container tests (`make test-containers`).

Everything this module starts carries the project name PROJECT, so `down()` and `leftovers()` can find it
all: containers, networks, volumes. Ports are free ones, so a `make run` on :8000 beside it does not clash.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("VLAAPI_TEST_PROJECT", "vlaapi-test")
COMPOSE = os.environ.get("PODMAN_COMPOSE", str(ROOT / ".data" / "podman-compose-venv" / "bin" / "podman-compose"))
IMAGE = os.environ.get("VLAAPI_IMAGE", "localhost/vlaapi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(ports: dict[str, int]) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(ROOT / "ops" / "containers" / "containers.conf"),
            "VLAAPI_IMAGE": IMAGE, "POSTGRES_IMAGE": "localhost/vlaapi-postgres:15",
            "REDIS_IMAGE": "localhost/vlaapi-redis:7", **{k: str(v) for k, v in ports.items()}}


def run(argv: list[str], *, check: bool = True, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("env", env({}))
    res = subprocess.run(argv, check=False, timeout=timeout, capture_output=True, text=True, **kw)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(argv[:6])}... exited {res.returncode}:\n{res.stderr[-3000:]}")
    return res


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(["podman", *args], check=check, timeout=timeout)


def compose(ports: dict[str, int], *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    argv = [COMPOSE, "--in-pod", "false", "-p", PROJECT, "-f", str(ROOT / "compose.yaml"), "--profile", "dev", *args]
    return run(argv, check=check, timeout=timeout, env=env(ports), cwd=ROOT)


def containers() -> list[dict[str, Any]]:
    out = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json").stdout
    return json.loads(out or "[]")


def container_of(service: str) -> str:
    for c in containers():
        if c.get("Labels", {}).get("com.docker.compose.service") == service:
            return c["Names"][0]
    raise LookupError(f"no container for service {service}")


def healthy(name: str) -> tuple[bool, str]:
    """Run the container's own HEALTHCHECK once (podman 4.3 runs them on timers only under systemd)."""
    res = podman("healthcheck", "run", name, check=False, timeout=60)
    return res.returncode == 0, (res.stdout + res.stderr).strip()


def wait_healthy(name: str, timeout: float) -> None:
    end, why = time.monotonic() + timeout, ""
    while time.monotonic() < end:
        ok, why = healthy(name)
        if ok:
            return
        time.sleep(2)
    raise AssertionError(f"{name} not healthy after {timeout:.0f} s: {why}\n{logs(name)[-3000:]}")


def logs(name: str) -> str:
    res = podman("logs", name, check=False)
    return res.stdout + res.stderr


def leftovers() -> dict[str, list[str]]:
    """What of this project is still there after `down`: containers, networks, volumes."""
    names = {
        "containers": podman("ps", "-a", "--format", "{{.Names}}").stdout.split(),
        "networks": podman("network", "ls", "--format", "{{.Name}}").stdout.split(),
        "volumes": podman("volume", "ls", "--format", "{{.Name}}").stdout.split(),
    }
    prefix = (PROJECT, PROJECT.replace("-", ""), PROJECT.replace("-", "_"))
    return {kind: [n for n in found if n.startswith(prefix)] for kind, found in names.items()}


def psql(sql: str) -> str:
    """A query in the stack's database, through the postgres container (no port published for it)."""
    return podman("exec", container_of("postgres"), "psql", "-U", "postgres", "-d", "vlaapi", "-tAc", sql).stdout
