"""The real stack for the fleet benchmark: gunicorn, N sim GPU workers of one model sharing its queue, the safety
worker and, when robots talk openpi, the openpi websocket door; PostgreSQL and Redis. Both sim models are
enabled (OpenVLA-7B and pi0 on the simulated H100, time constants x scale); a Stack runs the workers of one.
The robots are ops/bench/fleet_robots.py's.
"""
from __future__ import annotations

import threading
import time
import uuid

import redis

from ops import stack
from ops.bench.common import ROOT, free_port, spawn, stop, wait_http
from ops.bench.fleet_robots import Tally
from ops.procfile import gpu_worker_argv, safety_worker_argv
from workers.wire import notify

LOGS = ROOT / ".data" / "bench-logs"
OPENVLA, PI0 = "openvla-7b-sim", "pi0-sim"
TIERS = ("enterprise", "pro", "free")
MARGIN_MS = 10.0  # BATCH_DEADLINE_MARGIN_MS of the stack's workers (the default), also given to the twins
# the openpi door's caps lifted: the fleet's robots are few customers with many connections each
OPENPI_ENV = {"OPENPI_THREADS": "256", "OPENPI_CUSTOMER_THREADS": "256", "OPENPI_MAX_CONNECTIONS": "512",
              "OPENPI_TIER_CONNECTIONS": "free=512,pro=512,enterprise=512"}


def free_redis_db(base: str, preferred: int = 9) -> int:
    """A Redis database no client has selected (9 if free): the flush below must never empty a database another
    session's test run or stack is using on a shared server (tests/conftest.py picks its own the same way)."""
    busy = {int(c["db"]) for c in redis.Redis.from_url(f"{base}/0").client_list()}
    free = [db for db in (preferred, *range(1, 15)) if db not in busy]
    if not free:
        raise RuntimeError(f"every Redis database 1..14 on {base} has a client; stop stray workers")
    return free[0]


def setup(scale: float) -> dict[str, str]:
    db_url = stack.ensure_database(stack.ensure_postgres(), "vlaapi_fleet", recreate=True)
    base = stack.ensure_redis().rsplit("/", 1)[0]
    redis_url = f"{base}/{free_redis_db(base)}"
    redis.Redis.from_url(redis_url).flushdb()
    from workers.store.migrate import upgrade

    upgrade(db_url)
    return fleet_env(db_url, redis_url, scale)


def fleet_env(db_url: str, redis_url: str, scale: float) -> dict[str, str]:
    """The stack's environment: both sim models (time constants x scale), the workers' margin, the door's caps."""
    models = f"{OPENVLA}=sim:openvla?scale={scale:g},{PI0}=sim:pi0?scale={scale:g}"
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "ENABLED_MODELS": models, "LOG_LEVEL": "WARNING",
            "VLAAPI_ENV": "development", "VLAAPI_BENCHMARK": "1", "DEFAULT_DEADLINE_MS": "30000",
            "BATCH_DEADLINE_MARGIN_MS": f"{MARGIN_MS:g}", **OPENPI_ENV}


def customers(env: dict[str, str]) -> list[str]:
    """One key per tier (enterprise, pro, free), with every limit lifted: this scratch database is ours."""
    import os

    os.environ.update(env)
    from sqlalchemy import update

    from web.accounts import service
    from workers.settings import reload_settings
    from workers.store.db import session_scope
    from workers.store.models import Tier

    settings = reload_settings()
    keys = []
    with session_scope(settings.database_url) as s:
        s.execute(update(Tier).values(requests_per_minute=None, requests_per_day=None, requests_per_month=None,
                                      max_in_flight=None))
        for tier in TIERS:
            customer = service.create_customer(s, f"fleet-{tier}-{uuid.uuid4().hex[:6]}", tier)
            keys.append(service.create_key(s, customer, settings.api_key_pepper)[1])
    return keys


class Stack:
    def __init__(self, env: dict[str, str], workers: int, baseline: bool, model: str = OPENVLA,
                 openpi: bool = False):
        self.env = {**env, "BATCH_SCHEDULE": "fifo" if baseline else "edf",
                    "ADMISSION_FAIL_FAST": "0" if baseline else "1"}
        self.workers, self.model, self.port, self.procs = workers, model, free_port(), []
        self.bind = "127.0.0.1"  # where the web and the door listen; a HostsStack's web host's address
        self.openpi_port = free_port() if openpi else None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def ws_url(self, model: str) -> str:
        return f"ws://{self.bind}:{self.openpi_port}/v1/openpi/{model}"

    def _spawn(self, role: str, index: int, argv: list[str], env: dict[str, str], log: str):
        """Start one process (`role`: web, door, gpu (the index-th), safety); a HostsStack puts each on its host."""
        return spawn(argv, env, LOGS / log)

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            stop(self.procs)  # __exit__ never runs for a failed __enter__
            raise

    def _start(self) -> Stack:
        LOGS.mkdir(parents=True, exist_ok=True)
        web = ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "64", "--bind",
               f"{self.bind}:{self.port}", "web.app:create_app()"]
        self.procs.append(self._spawn("web", 0, web, self.env, "fleet-web.log"))
        for i in range(self.workers):
            argv = gpu_worker_argv(self.model, concurrency=32)
            argv[argv.index("-n") + 1] = f"gpu-{self.model}-{i}@%h"
            self.procs.append(self._spawn("gpu", i, argv, {**self.env, "WORKER_MODEL": self.model},
                                          f"fleet-gpu-{i}.log"))
        self.procs.append(self._spawn("safety", 0, safety_worker_argv(concurrency=32), self.env, "fleet-safety.log"))
        if self.openpi_port:
            door = ["web.compat.openpi", "--host", self.bind, "--port", str(self.openpi_port)]
            self.procs.append(self._spawn("web", 0, door, self.env, "fleet-openpi.log"))
            wait_http(f"http://{self.bind}:{self.openpi_port}/healthz", timeout=120)
        wait_http(f"{self.url}/health", timeout=120)
        r = redis.Redis.from_url(self.env["REDIS_URL"])
        end = time.monotonic() + 120
        while sum(b.get("state") == "ready" for b in notify.read_heartbeats(r, self.model)) < self.workers:
            if time.monotonic() > end:
                raise TimeoutError("sim GPU workers never became ready; see .data/bench-logs")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        stop(self.procs)

    def compute_s(self) -> float:
        """GPU busy seconds so far, summed over the workers' batchers (their heartbeats)."""
        beats = notify.read_heartbeats(redis.Redis.from_url(self.env["REDIS_URL"]), self.model)
        return sum(float((b.get("stats") or {}).get("compute_s", 0.0)) for b in beats)


def drive(st: Stack, robots: list, duration_s: float, warmup_s: float, join_s: float) -> tuple[Tally, float]:
    """Run the robots (each `run(counted_from, until, tally)` in a thread) for warm-up + duration; return the
    tally and the GPU busy seconds of the measured window."""
    tally, now = Tally(), time.monotonic()
    counted_from, until = now + warmup_s, now + warmup_s + duration_s
    threads = [threading.Thread(target=r.run, args=(counted_from, until, tally), daemon=True) for r in robots]
    for t in threads:
        t.start()
    time.sleep(max(0.0, counted_from - time.monotonic()))
    busy0 = st.compute_s()
    time.sleep(max(0.0, until - time.monotonic()))
    busy = st.compute_s() - busy0
    for t in threads:
        t.join(join_s)
    return tally, busy
