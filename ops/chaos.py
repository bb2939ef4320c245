"""Fault drills under a steady load: `python -m ops.chaos [--drills redis,postgres,gpu,safety,pause]`.

A stack of its own (ops/chaos_stack.py: private redis-server and PostgreSQL, web, one GPU worker, the safety
worker and the reaper, each supervised as under `make run`) takes a steady stream of POST /v1/jobs while each
drill strikes:

  redis       redis-server SIGKILL, restarted 5 s later (append-only file, as `make run`)
  redis-wipe  the same with no persistence: every queued message, token and heartbeat is lost
  postgres    the postmaster SIGQUIT (crash, no checkpoint), restarted 5 s later (crash recovery)
  gpu         the GPU worker SIGKILL; its supervisor starts a new one
  safety      the safety worker SIGKILL; its supervisor starts a new one
  pause       the GPU worker SIGSTOP for the deadline plus 5 s, then SIGCONT
  sentinel    Redis behind Sentinel (a primary, a replica, three sentinels): the master SIGKILL, failover

Per drill it prints: accepted, finished by state, stuck (not terminal) 60 s after the fault, jobs not terminal
by their deadline plus 10 s, duplicate usage rows, 5xx other than 503, and seconds from the end of the fault
to the first job submitted after it that succeeded. The last line is all of it as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.chaos_stack import Load, Stack, StackConfig

TERMINAL = {"succeeded", "failed", "expired", "canceled"}


@dataclass
class DrillConfig:
    rate: float = 5.0  # submissions per second
    warmup_s: float = 5.0
    outage_s: float = 5.0  # how long a killed server stays down
    load_after_s: float = 20.0  # load keeps coming this long after the fault began
    stuck_after_s: float = 60.0


def _kill_child(stack: Stack, name: str, sig: int = signal.SIGKILL) -> int:
    pid = stack.child(name)
    os.kill(pid, sig)
    return pid


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


def _pause(stack: Stack, cfg: DrillConfig) -> float:
    pid = _kill_child(stack, "gpu", signal.SIGSTOP)
    time.sleep(stack.cfg.deadline_ms / 1000.0 + 5.0)
    os.kill(pid, signal.SIGCONT)
    return time.time()


def _failover(stack: Stack, cfg: DrillConfig) -> float:
    """SIGKILL the Redis master; the fault ends when the sentinels name a new one."""
    killed = stack.cluster.kill_primary()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        port = stack.cluster.master_port()
        if port and port != killed:
            return time.time()
        time.sleep(0.2)
    raise RuntimeError("the sentinels elected no new master within 60 s")


DRILLS = {
    "redis": _redis,
    "redis-wipe": _redis,  # the stack is started without an append-only file for this one
    "postgres": _postgres,
    "gpu": lambda stack, cfg: (_kill_child(stack, "gpu"), time.time())[1],
    "safety": lambda stack, cfg: (_kill_child(stack, "safety"), time.time())[1],
    "pause": _pause,
    "sentinel": _failover,  # the stack runs on a primary, a replica and three sentinels for this one
}
SPECIAL = {"redis-wipe": {"redis_appendonly": False}, "sentinel": {"sentinel": True}}


def _rows(stack: Stack, ids: list[str], timeout: float = 60.0) -> list[Any]:
    """(id, state, deadline_at, finished_at, created_at, code) per job, retried while the database comes back."""
    from sqlalchemy import select

    from workers.store.db import session_scope
    from workers.store.models import Job

    end = time.monotonic() + timeout
    while True:
        try:
            with session_scope(stack.db_url) as s:
                return s.execute(select(Job.id, Job.state, Job.deadline_at, Job.finished_at, Job.created_at,
                                        Job.error["code"].astext.label("code"))
                                 .where(Job.id.in_([uuid.UUID(i) for i in ids]))).all()
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(1.0)


def _duplicates(stack: Stack, ids: list[str]) -> int:
    from sqlalchemy import func, select

    from workers.store.db import session_scope
    from workers.store.models import UsageRecord

    with session_scope(stack.db_url) as s:
        counts = s.execute(select(UsageRecord.job_id, func.count()).where(
            UsageRecord.job_id.in_([uuid.UUID(i) for i in ids])).group_by(UsageRecord.job_id)).all()
    return sum(n - 1 for _, n in counts if n > 1)


def _epoch(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def run_drill(stack: Stack, name: str, cfg: DrillConfig) -> dict[str, Any]:
    load = Load(stack, rate=cfg.rate).start()
    try:
        time.sleep(cfg.warmup_s)
        fault_at = time.time()
        fault_end = DRILLS[name](stack, cfg)
        _sleep_until(fault_at + cfg.load_after_s)
    finally:
        load.stop()
    subs = load.submissions
    ids = [s.job_id for s in subs if s.job_id]
    _sleep_until(fault_at + cfg.stuck_after_s)
    stuck = sum(r.state not in TERMINAL for r in _rows(stack, ids))
    _sleep_until(max(s.at for s in subs) + stack.cfg.deadline_ms / 1000.0 + 11.0)
    rows = _rows(stack, ids)
    late = sum(r.finished_at is None or _epoch(r.finished_at) > _epoch(r.deadline_at) + 10.0 for r in rows)
    after = [_epoch(r.finished_at) for r in rows if r.state == "succeeded" and _epoch(r.created_at) >= fault_end]
    statuses = Counter(s.status for s in subs)
    return {
        "drill": name, "accepted": len(ids), "submitted": len(subs),
        "answers": {str(k): v for k, v in sorted(statuses.items())},
        "finished": dict(sorted(Counter(r.state for r in rows).items())),
        "expired_lost": sum(r.state == "expired" and r.code == "lost" for r in rows),
        "stuck_after_60s": stuck, "late_past_deadline_plus_10s": late, "duplicate_usage_rows": _duplicates(stack, ids),
        "non_503_5xx": sum(n for code, n in statuses.items() if code >= 500 and code != 503),
        "unreachable": statuses.get(0, 0),
        "recovered_s": round(min(after) - fault_end, 1) if after else None,
    }


def format_row(r: dict[str, Any]) -> str:
    return (f"{r['drill']:<10} accepted {r['accepted']:>4}  finished {r['finished']} (lost {r['expired_lost']})  "
            f"stuck {r['stuck_after_60s']}  "
            f"late {r['late_past_deadline_plus_10s']}  dup usage {r['duplicate_usage_rows']}  "
            f"non-503 5xx {r['non_503_5xx']}  answers {r['answers']}  recovered {r['recovered_s']} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drills", default="redis,postgres,gpu,safety,pause")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--deadline-ms", type=int, default=5000)
    p.add_argument("--stuck-after", type=float, default=60.0)
    p.add_argument("--keep", action="store_true", help="keep each stack's folder (data and logs) even on success")
    args = p.parse_args(argv)
    drills = args.drills.split(",")
    unknown = [d for d in drills if d not in DRILLS]
    if unknown:
        p.error(f"unknown drills {unknown}; choose from {', '.join(DRILLS)}")
    cfg = DrillConfig(rate=args.rate, stuck_after_s=args.stuck_after)
    results = []
    groups = [[d] for d in SPECIAL if d in drills] + [[d for d in drills if d not in SPECIAL]]
    for group in (g for g in groups if g):
        stack = Stack(StackConfig(deadline_ms=args.deadline_ms, **SPECIAL.get(group[0], {})))
        t0 = time.monotonic()
        stack.start()
        print(f"stack up in {time.monotonic() - t0:.1f} s (logs in {stack.dir})", flush=True)
        ok = False
        try:
            for name in group:
                result = run_drill(stack, name, cfg)
                result["healthy_again_s"] = round(stack.wait_healthy(120), 1)
                print(format_row(result), flush=True)
                results.append(result)
            ok = not any(_off(r) for r in results)
        finally:
            stack.stop(remove=ok and not args.keep)  # a failed drill keeps its logs
    print(json.dumps({"drills": results}))
    return 1 if any(_off(r) for r in results) else 0


def _off(r: dict[str, Any]) -> bool:
    """A drill that missed a target of issue 12."""
    return bool(r["stuck_after_60s"] or r["duplicate_usage_rows"] or r["non_503_5xx"]
                or r["late_past_deadline_plus_10s"])


if __name__ == "__main__":
    sys.exit(main())
