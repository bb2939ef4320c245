"""Real Celery worker processes for the integration tests, started with the same argv as the Procfile."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from ops.lifeline import lifeline
from ops.procfile import gpu_worker_argv, safety_worker_argv
from workers.wire import notify

ROOT = Path(__file__).resolve().parents[2]


# Every worker started and not yet stopped. A test that fails before its own `stop()` would otherwise leave
# its worker consuming the shared queues for the rest of the session, and later tests would fail for it.
LIVE: set[WorkerProcess] = set()


class WorkerProcess:
    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.argv, self.env, self.log_path = argv, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        exe = [sys.executable, "-m", *self.argv]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(exe, cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lifeline())
        LIVE.add(self)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        LIVE.discard(self)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        LIVE.discard(self)
        self.log.close()

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")


def gpu_worker(model: str, log_dir: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(gpu_worker_argv(model, concurrency=8), {"WORKER_MODEL": model, **env},
                         log_dir / f"gpu-{model}.log")


def safety_worker(log_dir: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(safety_worker_argv(concurrency=4), env, log_dir / "safety.log")


def wait_ready(r: redis.Redis, model: str, timeout: float = 120.0, worker: WorkerProcess | None = None) -> None:
    """Wait for a heartbeat that says the model is loaded."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(b.get("state") == "ready" for b in notify.read_heartbeats(r, model)):
            return
        if worker and worker.proc and worker.proc.poll() is not None:
            raise RuntimeError(f"worker for {model} exited:\n{worker.tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"no ready worker for {model} within {timeout}s:\n{worker.tail() if worker else ''}")
