"""Real server processes for tests that speak HTTP or websockets over a socket, the way clients do."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ops.lifeline import lifeline
from tests.integration.workers import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serve(argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None,
          ready: Callable[[int], bool] = _port_open) -> Iterator[subprocess.Popen]:
    """Run `python -m argv...` until it accepts connections on `port`; stop it (its process group) after."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lifeline())
    try:
        end = time.monotonic() + 60
        while not ready(port):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{argv[0]} did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()


def gunicorn_argv(port: int, threads: int = 8) -> list[str]:
    return ["gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", str(threads),
            "--bind", f"127.0.0.1:{port}", "web.app:create_app()"]
