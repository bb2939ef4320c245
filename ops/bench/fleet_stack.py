"""The real stack for the fleet benchmark: gunicorn, N sim GPU workers of one model sharing its queue, the safety
worker; and robots: one thread each, a control loop that POSTs /v1/inference at every tick.

OpenVLA robots (one action per tick): at each tick the robot sends its observation with `deadline_ms` = its
deadline; the tick is on time if the answer is a 200 within the deadline. A 503 deadline_unattainable is a
fail-fast answer (counted with its latency); anything else (504 expired, errors) is a missed tick.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis
import requests

from ops import stack
from ops.bench.common import ROOT, free_port, png_b64, spawn, stop, wait_http
from ops.procfile import gpu_worker_argv, safety_worker_argv
from workers.wire import notify

LOGS = ROOT / ".data" / "bench-logs"
MODEL = "openvla-7b-sim"
TIERS = ("enterprise", "pro", "free")


def setup(scale: float) -> dict[str, str]:
    db_url = stack.ensure_database(stack.ensure_postgres(), "vlaapi_fleet", recreate=True)
    redis_url = stack.ensure_redis().rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(redis_url).flushdb()
    from workers.store.migrate import upgrade

    upgrade(db_url)
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "ENABLED_MODELS": f"{MODEL}=sim:openvla?scale={scale:g}",
            "LOG_LEVEL": "WARNING", "VLAAPI_ENV": "development", "VLAAPI_BENCHMARK": "1",
            "DEFAULT_DEADLINE_MS": "30000"}


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
    def __init__(self, env: dict[str, str], workers: int, baseline: bool):
        self.env = {**env, "BATCH_SCHEDULE": "fifo" if baseline else "edf",
                    "ADMISSION_FAIL_FAST": "0" if baseline else "1"}
        self.workers, self.port, self.procs = workers, free_port(), []
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            stop(self.procs)  # __exit__ never runs for a failed __enter__
            raise

    def _start(self) -> Stack:
        LOGS.mkdir(parents=True, exist_ok=True)
        web = ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "64", "--bind",
               f"127.0.0.1:{self.port}", "web.app:create_app()"]
        self.procs.append(spawn(web, self.env, LOGS / "fleet-web.log"))
        for i in range(self.workers):
            argv = gpu_worker_argv(MODEL, concurrency=32)
            argv[argv.index("-n") + 1] = f"gpu-{MODEL}-{i}@%h"
            self.procs.append(spawn(argv, {**self.env, "WORKER_MODEL": MODEL}, LOGS / f"fleet-gpu-{i}.log"))
        self.procs.append(spawn(safety_worker_argv(concurrency=32), self.env, LOGS / "fleet-safety.log"))
        wait_http(f"{self.url}/health", timeout=120)
        r = redis.Redis.from_url(self.env["REDIS_URL"])
        end = time.monotonic() + 120
        while sum(b.get("state") == "ready" for b in notify.read_heartbeats(r, MODEL)) < self.workers:
            if time.monotonic() > end:
                raise TimeoutError("sim GPU workers never became ready; see .data/bench-logs")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        stop(self.procs)

    def compute_s(self) -> float:
        """GPU busy seconds so far, summed over the workers' batchers (their heartbeats)."""
        beats = notify.read_heartbeats(redis.Redis.from_url(self.env["REDIS_URL"]), MODEL)
        return sum(float((b.get("stats") or {}).get("compute_s", 0.0)) for b in beats)


@dataclass
class Tally:
    ticks: int = 0
    on_time: int = 0
    failfast_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)  # latency minus the simulated pass and its queue
    expired_ms: list[float] = field(default_factory=list)  # 504s: ended by the scheduler or at the deadline
    other: dict[str, int] = field(default_factory=dict)
    per_robot: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def robot(url: str, key: str, hz: float, deadline_s: float, until: float, counted_from: float, tally: Tally,
          seed: int) -> None:
    session, period = requests.Session(), 1.0 / hz
    body = {"model": MODEL, "image": png_b64(32, 32, seed), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}, "deadline_ms": int(deadline_s * 1e3)}
    headers = {"Authorization": f"Bearer {key}"}
    tick, mine = time.monotonic() + random.Random(seed).uniform(0, period), [0, 0]
    while tick < until:
        time.sleep(max(0.0, tick - time.monotonic()))
        sent = time.monotonic()
        try:
            resp = session.post(f"{url}/v1/inference", json=body, headers=headers, timeout=deadline_s + 5)
            status, doc = resp.status_code, resp.json()
        except (requests.RequestException, ValueError) as exc:
            status, doc = 0, {"type": type(exc).__name__}
        took = time.monotonic() - sent
        if sent >= counted_from:
            _count(tally, mine, status, doc, took, deadline_s)
        tick += period * max(1, int((time.monotonic() - tick) // period) + 1)  # a late answer skips ticks
    with tally.lock:
        if mine[0]:
            tally.per_robot.append(mine[1] / mine[0])


def _count(tally: Tally, mine: list[int], status: int, doc: dict, took: float, deadline_s: float) -> None:
    on_time = status == 200 and took <= deadline_s
    with tally.lock:
        tally.ticks += 1
        mine[0] += 1
        if on_time:
            tally.on_time += 1
            mine[1] += 1
        if status == 200:
            tally.latency_ms.append(took * 1e3)
            timings = (doc.get("performance") or {}).get("model_timings_ms") or {}
            tally.overhead_ms.append(took * 1e3 - timings.get("simulated_ms", 0.0) - timings.get("queue_ms", 0.0))
        elif status == 503 and str(doc.get("type", "")).endswith("deadline_unattainable"):
            tally.failfast_ms.append(took * 1e3)
        else:
            if status == 504:
                tally.expired_ms.append(took * 1e3)
            name = str(status) + ":" + str(doc.get("type", "")).rsplit("/", 1)[-1]
            tally.other[name] = tally.other.get(name, 0) + 1


def drive(st: Stack, keys: list[str], robots: int, hz: float, deadline_s: float, duration_s: float,
          warmup_s: float) -> tuple[Tally, float]:
    """Run `robots` robots (tiers in turn) for warm-up + duration; return the tally and GPU busy seconds."""
    tally, now = Tally(), time.monotonic()
    counted_from, until = now + warmup_s, now + warmup_s + duration_s
    busy0 = [0.0]
    threads = [threading.Thread(target=robot, args=(st.url, keys[i % len(keys)], hz, deadline_s, until,
                                                    counted_from, tally, i), daemon=True) for i in range(robots)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, counted_from - time.monotonic()))
    busy0[0] = st.compute_s()
    time.sleep(max(0.0, until - time.monotonic()))
    busy = st.compute_s() - busy0[0]
    for t in threads:
        t.join(deadline_s + 10)
    return tally, busy
