"""The faults of ops/chaos.py. Each drill strikes the stack, waits out the fault, and returns the epoch second
its fault ended (the server back, the process resumed, the link up): first success is measured from there.

Kills and crashes (issue 12): redis, redis-wipe, postgres, gpu, safety, pause, sentinel.
Issue 22, one host:
  hang-redis / hang-postgres / hang-gpu   SIGSTOP of redis-server / every PostgreSQL process / the GPU
                worker for `fault_s`, then SIGCONT (a hang: connections stay open, nothing answers)
  maxmemory     Redis's maxmemory set to its current usage (noeviction) for `fault_s`, then unlimited again
  pg-connections every free PostgreSQL connection slot taken by the drill for `fault_s`, then released
Issue 22, across hosts (ops/chaos_net.py; the stack must be a NetStack):
  part-gpu-redis / part-gpu-pg / part-gpu-both   the GPU host's link(s) to the db host down for `fault_s`
  part-web-redis  the web host's link to Redis down for `fault_s`
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.chaos_stack import Stack


@dataclass
class DrillConfig:
    rate: float = 5.0  # submissions per second
    warmup_s: float = 5.0
    outage_s: float = 5.0  # how long a killed server stays down
    fault_s: float = 20.0  # how long a hang, a memory limit, an exhaustion or a partition lasts
    after_s: float = 15.0  # load keeps coming this long after the fault ended
    settle_s: float = 10.0  # after the last submission's deadline, before the rows are judged


def _redis(stack: Stack, cfg: DrillConfig) -> float:
    stack.redis.kill()
    time.sleep(cfg.outage_s)
    stack.redis.start()
    return time.time()


def _postgres(stack: Stack, cfg: DrillConfig) -> float:
    stack.pg.crash()
    time.sleep(cfg.outage_s)
    stack.pg.start()
    return time.time()


def _kill(name: str) -> Callable[[Stack, DrillConfig], float]:
    def drill(stack: Stack, cfg: DrillConfig) -> float:
        os.kill(stack.child(name), signal.SIGKILL)
        return time.time()
    return drill


def _pause(stack: Stack, cfg: DrillConfig) -> float:
    pid = stack.child("gpu")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(stack.cfg.deadline_ms / 1000.0 + 5.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.time()


def _failover(stack: Stack, cfg: DrillConfig) -> float:
    """SIGKILL the Redis master; the fault ends when the sentinels name a new one."""
    killed = stack.cluster.kill_primary()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        port = stack.cluster.master_port()
        if port and port != killed:
            healed = time.time()
            stack.cluster.rejoin(killed)
            return healed
        time.sleep(0.2)
    raise RuntimeError("the sentinels elected no new master within 60 s")


def _hang(target: str) -> Callable[[Stack, DrillConfig], float]:
    """SIGSTOP a whole process group (PostgreSQL's backends are the postmaster's group), SIGCONT after."""
    def drill(stack: Stack, cfg: DrillConfig) -> float:
        pgid = {"redis": lambda: stack.redis.proc.pid, "postgres": lambda: stack.pg.proc.pid,
                "gpu": lambda: stack.child("gpu")}[target]()
        os.killpg(pgid, signal.SIGSTOP)
        try:
            time.sleep(cfg.fault_s)
        finally:
            os.killpg(pgid, signal.SIGCONT)
        return time.time()
    return drill


def _maxmemory(stack: Stack, cfg: DrillConfig) -> float:
    import redis

    r = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    old = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", r.info("memory")["used_memory"])
    try:
        time.sleep(cfg.fault_s)
    finally:
        r.config_set("maxmemory", old)
    return time.time()


def _pg_connections(stack: Stack, cfg: DrillConfig) -> float:
    """Open connections until PostgreSQL refuses one (as superuser: the reserved slots go too, and the stack
    connects as a superuser), hold them, close them. Connections already pooled keep working."""
    import psycopg2

    held = []
    try:
        while len(held) < 1000:
            try:
                held.append(psycopg2.connect(host=stack.pg.host, port=stack.pg.port, user="postgres",
                                             dbname="postgres", connect_timeout=5))
            except psycopg2.OperationalError:
                break
        print(f"  pg-connections: holding {len(held)} connections", flush=True)
        time.sleep(cfg.fault_s)
    finally:
        for conn in held:
            conn.close()
    return time.time()


def _partition(host: str, *servers: str) -> Callable[[Stack, DrillConfig], float]:
    def drill(stack: Stack, cfg: DrillConfig) -> float:
        net = getattr(stack, "net", None)
        if net is None:
            raise RuntimeError("partition drills need the multi-host stack (--multihost)")
        net.cut(host, servers)
        try:
            time.sleep(cfg.fault_s)
        finally:
            net.heal(host, servers)
        return time.time()
    return drill


DRILLS: dict[str, Callable[[Stack, DrillConfig], float]] = {
    "redis": _redis,
    "redis-wipe": _redis,  # the stack is started without an append-only file for this one
    "postgres": _postgres,
    "gpu": _kill("gpu"),
    "safety": _kill("safety"),
    "pause": _pause,
    "sentinel": _failover,  # the stack runs on a primary, a replica and three sentinels for this one
    "hang-redis": _hang("redis"),
    "hang-postgres": _hang("postgres"),
    "hang-gpu": _hang("gpu"),
    "maxmemory": _maxmemory,
    "pg-connections": _pg_connections,
    "part-gpu-redis": _partition("gpu", "redis"),
    "part-gpu-pg": _partition("gpu", "postgres"),
    "part-gpu-both": _partition("gpu", "redis", "postgres"),
    "part-web-redis": _partition("web", "redis"),
}
SPECIAL = {"redis-wipe": {"redis_appendonly": False}, "sentinel": {"sentinel": True}}
MULTIHOST = [d for d in DRILLS if d.startswith("part-")]
ISSUE22 = ["hang-redis", "hang-postgres", "hang-gpu", "maxmemory", "pg-connections"]
# First success within 10 s of a supervised GPU worker's death; 5 s after any other fault ends (issue 22).
RECOVER_WITHIN = {"gpu": 10.0}
