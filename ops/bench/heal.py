"""How fast the stack notices a fault and heals (issue 22): `python -m ops.bench.heal [--faults ...]`.

On the fault drills' stack (ops/chaos_stack.py: private redis-server and PostgreSQL, web, one GPU worker, the
safety worker and the reaper, each under ops/supervise.py), with the heartbeat settings left at their defaults
unless --heartbeat-s is given, a prober sends `POST /v1/inference` (5 s deadline) back to back and records
every answer. Per fault it prints:

  detect-safety   safety worker SIGSTOP -> seconds until /health answers 503 (then SIGCONT)
  detect-gpu      GPU worker SIGSTOP -> seconds until /health answers 503 (then SIGCONT)
  redis           redis-server SIGKILL, restarted 5 s later -> seconds from the restart to the first 200
  postgres        PostgreSQL crash, restarted 5 s later -> seconds from the restart to the first 200
  gpu-kill        GPU worker SIGKILL (its supervisor restarts it) -> seconds from the kill to the first 200 of a
                  request sent after it (each kill waits until the worker has lived a minute: a first death)
  failover        (with --sentinel) the Redis master SIGKILLed -> seconds from the sentinels naming a new
                  master to the first 200

and, first, the Redis commands per second the idle stack costs (heartbeats, watchdog pings, the reaper).
The last line is everything as JSON. With --keep the stack's folder stays: every process's log (`--log-level
INFO` adds the boot and per-task lines with their timestamps), `answers.jsonl` (every probe: sent, answered,
status, epoch seconds) and `faults.jsonl` (each fault's start and heal times), for a breakdown.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from ops.chaos_load import Load
from ops.chaos_stack import MODEL, Stack, StackConfig

FAULTS = ("detect-safety", "detect-gpu", "redis", "postgres", "gpu-kill")
SENTINEL_FAULTS = ("failover",)


class HealStack(Stack):
    """The drills' stack, with the workers' heartbeat and the reaper at their defaults (or --heartbeat-s)."""

    heartbeat_s: str | None = None
    log_level: str | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("REAPER_INTERVAL_S", None)
        if self.log_level:
            env["LOG_LEVEL"] = self.log_level
        if self.heartbeat_s:
            env["WORKER_HEARTBEAT_S"] = self.heartbeat_s
        else:
            env.pop("WORKER_HEARTBEAT_S", None)
        return env


@dataclass
class Prober:
    """Back-to-back synchronous requests; every answer as (sent, answered, status)."""

    stack: Stack
    answers: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._body = {**Load(self.stack)._body, "deadline_ms": 5000}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        http = requests.Session()
        headers = {"Authorization": f"Bearer {self.stack.api_key}"}
        while not self._stop.is_set():
            t0 = time.time()
            try:
                status = http.post(self.stack.base + "/v1/inference", json=self._body, headers=headers,
                                   timeout=15).status_code
            except requests.RequestException:
                status = 0
            self.answers.append((t0, time.time(), status))
            self._stop.wait(0.05)

    def first_success_after(self, t: float, sent_after: float, timeout: float = 60.0) -> float | None:
        """Seconds from `t` to the first 200 of a request sent after `sent_after` (the fault): a request that
        had passed the GPU stage before a GPU worker was killed proves nothing about the heal."""
        end = time.time() + timeout
        while time.time() < end:
            done = [a for s, a, st in list(self.answers) if st == 200 and a >= t and s >= sent_after]
            if done:
                return round(min(done) - t, 2)
            time.sleep(0.05)
        return None


def redis_ops_per_s(url: str, seconds: float = 10.0) -> float:
    r = redis.Redis.from_url(url)
    n0 = int(r.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    return round((int(r.info("stats")["total_commands_processed"]) - n0 - 1) / seconds, 1)


def detect(stack: Stack, name: str) -> float | None:
    pid = stack.child(name)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 30:
            if requests.get(stack.base + "/health", timeout=5).status_code == 503:
                return round(time.monotonic() - t0, 2)
            time.sleep(0.05)
        return None
    finally:
        os.kill(pid, signal.SIGCONT)


def run_fault(stack: Stack, prober: Prober, fault: str) -> tuple[float | None, dict[str, float]]:
    """Inject one fault; (seconds to detection or to the first 200 after the heal, its timestamps)."""
    if fault == "detect-safety":
        t0 = time.time()
        return detect(stack, "safety"), {"fault_at": t0}
    if fault == "detect-gpu":
        t0 = time.time()
        return detect(stack, "gpu"), {"fault_at": t0}
    times = {"fault_at": time.time()}
    if fault == "redis":
        stack.redis.kill()
        time.sleep(5.0)
        stack.redis.start()
    elif fault == "postgres":
        stack.pg.crash()
        time.sleep(5.0)
        stack.pg.start()
    elif fault == "gpu-kill":
        _wait_settled(stack, "gpu")
        times["fault_at"] = time.time()
        os.kill(stack.child("gpu"), signal.SIGKILL)
    elif fault == "failover":
        return _failover(stack, prober, times)
    times["healed_at"] = time.time()
    return prober.first_success_after(times["healed_at"], times["fault_at"]), times


def _failover(stack: Stack, prober: Prober, times: dict[str, float]) -> tuple[float | None, dict[str, float]]:
    """SIGKILL the master; healed when the sentinels name another. The killed server then comes back (the
    sentinels make it a replica of the new master), so the next repeat has a replica to promote."""
    cluster = stack.cluster
    assert cluster is not None, "failover needs --sentinel"
    old = cluster.kill_primary()
    end = time.monotonic() + 60
    while cluster.master_port() in (old, None) and time.monotonic() < end:
        time.sleep(0.05)
    times["healed_at"] = time.time()
    secs = prober.first_success_after(times["healed_at"], times["fault_at"])
    victim = (cluster.primary if cluster.primary.port == old else cluster.replica).start()
    end = time.monotonic() + 30
    while time.monotonic() < end:  # a replica in sync: the next repeat's failover has one to promote
        with contextlib.suppress(redis.RedisError):
            info = redis.Redis.from_url(victim.url, socket_timeout=1).info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                break
        time.sleep(0.2)
    return secs, times


def _wait_settled(stack: Stack, name: str) -> None:
    """Let the process reach ops/supervise.py's HEALTHY_AFTER_S: each kill is then a first death, restarted
    after MIN_BACKOFF_S, not one of a crash loop the supervisor backs off from."""
    from ops.supervise import HEALTHY_AFTER_S

    time.sleep(max(0.0, _started_at(stack.child(name)) + HEALTHY_AFTER_S + 1.0 - time.time()))


def _started_at(pid: int) -> float:
    """A process's start (epoch seconds), from /proc: its start in clock ticks after boot, plus the boot."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", default=None, help=f"comma-separated (default: {','.join(FAULTS)}; with "
                                                  f"--sentinel: {','.join(SENTINEL_FAULTS)})")
    p.add_argument("--heartbeat-s", default=None, help="WORKER_HEARTBEAT_S for the workers (default: theirs)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--sentinel", action="store_true", help="Redis behind Sentinel (a primary, a replica, 3 sentinels)")
    p.add_argument("--keep", action="store_true", help="keep the stack's folder: logs, answers.jsonl, faults.jsonl")
    p.add_argument("--log-level", default=None, help="LOG_LEVEL of every process (the drills' default: WARNING)")
    args = p.parse_args(argv)
    HealStack.heartbeat_s, HealStack.log_level = args.heartbeat_s, args.log_level
    stack = HealStack(StackConfig(sentinel=args.sentinel))
    stack.start()
    out: dict[str, Any] = {"model": MODEL, "heartbeat_s": args.heartbeat_s or "default"}
    try:
        time.sleep(3.0)
        out["idle_redis_ops_per_s"] = redis_ops_per_s(stack.cluster.primary.url if stack.cluster else stack.redis_url)
        print(f"idle Redis commands/s: {out['idle_redis_ops_per_s']}", flush=True)
        _run_faults(stack, (args.faults or ",".join(SENTINEL_FAULTS if args.sentinel else FAULTS)).split(","),
                    args.repeat, out)
    finally:
        stack.stop(remove=not args.keep)
        if args.keep:
            print(f"logs kept in {stack.dir}", flush=True)
    print(json.dumps(out))
    return 0


def _run_faults(stack: Stack, faults: list[str], repeat: int, out: dict[str, Any]) -> None:
    prober = Prober(stack).start()
    try:
        with open(stack.dir / "faults.jsonl", "a") as record:
            for fault in faults:
                for _ in range(repeat):
                    secs, times = run_fault(stack, prober, fault)
                    out.setdefault(fault, []).append(secs)
                    record.write(json.dumps({"fault": fault, "seconds": secs, **times}) + "\n")
                    record.flush()
                    print(f"{fault:<14} {secs} s", flush=True)
                    stack.wait_healthy(120)
                    time.sleep(2.0)
    finally:
        prober.stop()
        with open(stack.dir / "answers.jsonl", "w") as f:
            f.writelines(json.dumps({"sent": s, "answered": a, "status": st}) + "\n" for s, a, st in prober.answers)


if __name__ == "__main__":
    raise SystemExit(main())
