"""How fast the stack notices a fault and heals (issue 22): `python -m ops.bench.heal [--faults ...]`.

On the fault drills' stack (ops/chaos_stack.py: private redis-server and PostgreSQL, web, one GPU worker, the
safety worker and the reaper, each under ops/supervise.py), with the heartbeat settings left at their defaults
unless --heartbeat-s is given, a prober sends `POST /v1/inference` (5 s deadline) back to back and records
every answer. Per fault it prints:

  detect-safety   safety worker SIGSTOP -> seconds until /health answers 503 (then SIGCONT)
  detect-gpu      GPU worker SIGSTOP -> seconds until /health answers 503 (then SIGCONT)
  redis           redis-server SIGKILL, restarted 5 s later -> seconds from the restart to the first 200
  postgres        PostgreSQL crash, restarted 5 s later -> seconds from the restart to the first 200
  gpu-kill        GPU worker SIGKILL (its supervisor restarts it) -> seconds from the kill to the first 200

and, first, the Redis commands per second the idle stack costs (heartbeats, watchdog pings, the reaper).
The last line is everything as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from ops.chaos_stack import MODEL, Load, Stack, StackConfig

FAULTS = ("detect-safety", "detect-gpu", "redis", "postgres", "gpu-kill")


class HealStack(Stack):
    """The drills' stack, with the workers' heartbeat and the reaper at their defaults (or --heartbeat-s)."""

    heartbeat_s: str | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("REAPER_INTERVAL_S", None)
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

    def first_success_after(self, t: float, timeout: float = 60.0) -> float | None:
        end = time.time() + timeout
        while time.time() < end:
            done = [a for _, a, st in list(self.answers) if st == 200 and a >= t]
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


def run_fault(stack: Stack, prober: Prober, fault: str) -> float | None:
    if fault == "detect-safety":
        return detect(stack, "safety")
    if fault == "detect-gpu":
        return detect(stack, "gpu")
    if fault == "redis":
        stack.redis.kill()
        time.sleep(5.0)
        stack.redis.start()
    elif fault == "postgres":
        stack.pg.crash()
        time.sleep(5.0)
        stack.pg.start()
    elif fault == "gpu-kill":
        os.kill(stack.child("gpu"), signal.SIGKILL)
    return prober.first_success_after(time.time())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--heartbeat-s", default=None, help="WORKER_HEARTBEAT_S for the workers (default: theirs)")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    HealStack.heartbeat_s = args.heartbeat_s
    stack = HealStack(StackConfig())
    stack.start()
    out: dict[str, Any] = {"model": MODEL, "heartbeat_s": args.heartbeat_s or "default"}
    try:
        time.sleep(3.0)
        out["idle_redis_ops_per_s"] = redis_ops_per_s(stack.redis_url)
        print(f"idle Redis commands/s: {out['idle_redis_ops_per_s']}", flush=True)
        prober = Prober(stack).start()
        try:
            for fault in args.faults.split(","):
                for _ in range(args.repeat):
                    secs = run_fault(stack, prober, fault)
                    out.setdefault(fault, []).append(secs)
                    print(f"{fault:<14} {secs} s", flush=True)
                    stack.wait_healthy(120)
                    time.sleep(2.0)
        finally:
            prober.stop()
    finally:
        stack.stop(remove=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
