"""The stack the fault drills run against: its own redis-server and PostgreSQL cluster (so killing them
touches nobody else), and web, a GPU worker, a safety worker and the reaper, each under ops/supervise.py as
`make run` runs them. The load they take is ops/chaos_load.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from ops.faults import PostgresServer, RedisServer, SentinelCluster, children, free_port
from ops.procfile import gpu_worker_argv, safety_worker_argv

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openvla-tiny"
PEPPER = "chaos-pepper"


@dataclass
class StackConfig:
    deadline_ms: int = 5000
    reaper_grace_s: float = 1.0  # with its 1 s interval, a job no worker can end ends by deadline + 2 s (issue 22)
    watchdog_s: float = 10.0
    visibility_s: int = 30
    redis_appendonly: bool = True  # as `make run`'s embedded Redis
    sentinel: bool = False  # a primary, a replica and three sentinels instead of one redis-server


class Stack:
    def __init__(self, cfg: StackConfig, work_dir: Path | None = None):
        self.cfg = cfg
        self.dir = Path(work_dir or tempfile.mkdtemp(prefix="vla-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root, and must reach its folder
        self.redis = RedisServer(self.dir / "redis", appendonly=cfg.redis_appendonly)
        self.cluster = SentinelCluster(self.dir / "sentinel") if cfg.sentinel else None
        self.pg = PostgresServer(self.dir / "pg")
        self.web_host, self.web_port = "127.0.0.1", free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.db_url = ""
        self.api_key = ""

    @property
    def redis_url(self) -> str:
        return self.cluster.url if self.cluster else self.redis.url

    @property
    def base(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    def env(self) -> dict[str, str]:
        from workers.settings import ROOT as SROOT

        # Heartbeats (WORKER_HEARTBEAT_S) at their default, as `make run`: how fast a dead stage shows is measured.
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(DATABASE_URL=self.db_url, REDIS_URL=self.redis_url, ENABLED_MODELS=MODEL,
                   REDIS_SENTINEL_MASTER=SentinelCluster.MASTER,
                   MODEL_DIR=str(SROOT / ".data" / "models"), API_KEY_PEPPER=PEPPER, LOG_LEVEL="WARNING",
                   WORKER_WATCHDOG_S=str(self.cfg.watchdog_s), WORKER_DRAIN_S="3",
                   REAPER_INTERVAL_S="1", REAPER_GRACE_S=str(self.cfg.reaper_grace_s),
                   BROKER_VISIBILITY_TIMEOUT_S=str(self.cfg.visibility_s), PYTHONPATH=str(ROOT),
                   TORCH_CPU_THREADS="1", PYTHONUNBUFFERED="1")
        return env

    def start(self, timeout: float = 180.0) -> Stack:
        self._servers()
        self.db_url = self.pg.create_database("vlaapi")
        self._prepare()
        for name, cmd in self.commands().items():
            env = {**self.env(), **({"WORKER_MODEL": MODEL} if name == "gpu" else {})}
            log = open(self.dir / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "ops.supervise", "--", *cmd], cwd=ROOT,
                                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, preexec_fn=self.preexec(name))
        self.wait_healthy(timeout)
        return self

    def _servers(self) -> None:
        if self.cluster:
            self.cluster.start()
        else:
            self.redis.start()
        self.pg.init().start()

    def commands(self) -> dict[str, list[str]]:
        py = sys.executable
        return {
            "web": [py, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "32",
                    "--bind", f"{self.web_host}:{self.web_port}", "web.app:create_app()"],
            "gpu": [py, "-m", *gpu_worker_argv(MODEL, concurrency=8)],
            "safety": [py, "-m", *safety_worker_argv(concurrency=4)],
            "reaper": [py, "-m", "ops.reaper"],
        }

    def preexec(self, name: str) -> Callable[[], None] | None:
        """What a supervised process runs before its command: nothing here; its namespace in ops/chaos_net.py."""
        return None

    def _prepare(self) -> None:
        """Migrate, make sure the tiny checkpoint exists, and make an enterprise customer with a key."""
        from web.accounts import service
        from workers.policies.presets import build_tiny_checkpoints
        from workers.settings import ROOT as SROOT
        from workers.store.db import session_scope
        from workers.store.migrate import upgrade

        upgrade(self.db_url)
        models = SROOT / ".data" / "models"
        if not (models / MODEL / "config.json").exists():
            build_tiny_checkpoints(models, [MODEL])
        with session_scope(self.db_url) as s:
            customer = service.create_customer(s, f"chaos-{uuid.uuid4().hex[:8]}", "enterprise")
            _, self.api_key = service.create_key(s, customer, PEPPER)

    def wait_healthy(self, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if requests.get(self.base + "/health", timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"stack not healthy within {timeout} s; logs in {self.dir}")

    def child(self, name: str) -> int:
        """The pid of the process a supervisor runs now (its supervisor restarts it when it exits)."""
        kids = children(self.procs[name].pid)
        if not kids:
            raise RuntimeError(f"{name} has no running child")
        return kids[0]

    def stop(self, *, remove: bool = False) -> None:
        """Stop every process and both servers; `remove` also deletes the folder (data and logs)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.pg.stop()
        self.redis.stop()
        if self.cluster:
            self.cluster.stop()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)
