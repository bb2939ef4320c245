"""Fault drills under a steady load: `python -m ops.chaos [--drills a,b | --issue22 | --multihost | --all]`.

A stack of its own (ops/chaos_stack.py: private redis-server and PostgreSQL, web, one GPU worker, the safety
worker and the reaper, each supervised as under `make run`; with --multihost, each host in its own network
namespace, ops/chaos_net.py) takes a steady load (ops/chaos_load.py: 4 clients alternating a synchronous
POST /v1/inference and POST /v1/jobs + polling, 5 s deadlines) while each drill strikes (ops/chaos_drills.py
lists them). Per drill it prints what ops/chaos_measure.py measures and the issue-22 targets it missed; the
last line is every result as one JSON object. `--runs 3` repeats each drill on the same stack.

  python -m ops.chaos --all --runs 3     every drill (one-host ones, then the partitions), three times
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from ops.chaos_drills import DRILLS, ISSUE22, MULTIHOST, RECOVER_WITHIN, SPECIAL, DrillConfig
from ops.chaos_load import Load, prime
from ops.chaos_measure import measure, misses
from ops.chaos_stack import Stack, StackConfig

CLASSIC = ["redis", "postgres", "gpu", "safety", "pause"]


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def run_drill(stack: Stack, name: str, cfg: DrillConfig) -> dict[str, Any]:
    load = Load(stack, rate=cfg.rate).start()
    try:
        time.sleep(cfg.warmup_s)
        fault_at = time.time()
        fault_end = DRILLS[name](stack, cfg)
        time.sleep(cfg.after_s)
    finally:
        load.stop()
    last = max(s.at for s in load.submissions)
    _sleep_until(last + stack.cfg.deadline_ms / 1000.0 + cfg.settle_s)
    result = {"drill": name, "fault_s": round(fault_end - fault_at, 1), **measure(stack, load, fault_end)}
    result["misses"] = misses(result, RECOVER_WITHIN.get(name, 5.0))
    return result


def format_row(r: dict[str, Any]) -> str:
    return (f"{r['drill']:<14} accepted {r['accepted']:>4}  finished {r['finished']}  stuck {r['stuck']}  "
            f"lost rows {r['lost_rows']} (reaped lost {r['expired_lost']})  dup usage {r['duplicate_usage_rows']}  "
            f"non-503 5xx {r['non_503_5xx']}  answered wrongly {r['accepted_answered_wrongly']} "
            f"{r['wrong_answers'] or ''}  retried {r['retried']} (mismatch {r['retry_mismatch']})  "
            f"late>2s {r['late_2s']}  recovered {r['recovered_s']} s  answers {r['answers']} polls {r['polls']}"
            f"  MISSES {','.join(r['misses']) or 'none'}")


def _groups(drills: list[str]) -> list[tuple[list[str], dict[str, Any], bool]]:
    """(drills, StackConfig overrides, multi-host) per stack: a special drill has a stack of its own."""
    out = [([d], SPECIAL[d], False) for d in drills if d in SPECIAL]
    one = [d for d in drills if d not in SPECIAL and d not in MULTIHOST]
    multi = [d for d in drills if d in MULTIHOST]
    return out + ([(one, {}, False)] if one else []) + ([(multi, {}, True)] if multi else [])


def _stack(overrides: dict[str, Any], multihost: bool, deadline_ms: int) -> Stack:
    cfg = StackConfig(deadline_ms=deadline_ms, **overrides)
    if not multihost:
        return Stack(cfg)
    from ops.chaos_net import NetStack, available

    why = available()
    if why:
        raise SystemExit(f"the multi-host drills cannot run here: {why}")
    return NetStack(cfg)


def run_group(drills: list[str], overrides: dict[str, Any], multihost: bool, cfg: DrillConfig, runs: int,
              deadline_ms: int, keep: bool, results: list[dict[str, Any]]) -> None:
    """Run the group's drills `runs` times on one stack, appending each result to `results` as it comes (so a
    stack that fails midway still leaves the figures it had)."""
    stack = _stack(overrides, multihost, deadline_ms)
    t0 = time.monotonic()
    mine: list[dict[str, Any]] = []
    try:
        stack.start()
        print(f"stack up in {time.monotonic() - t0:.1f} s, first success {prime(stack):.1f} s later "
              f"(logs in {stack.dir})", flush=True)
        for run in range(1, runs + 1):
            for name in drills:
                result = {"run": run, **run_drill(stack, name, cfg)}
                result["healthy_again_s"] = round(stack.wait_healthy(120), 1)
                print(format_row(result), flush=True)
                mine.append(result)
                results.append(result)
    except Exception as exc:
        print(f"{drills} stopped: {type(exc).__name__}: {exc}", flush=True)
        results.append({"drills": drills, "error": f"{type(exc).__name__}: {exc}", "misses": ["error"]})
        mine.append(results[-1])
    finally:
        stack.stop(remove=not keep and bool(mine) and not any(r["misses"] for r in mine))


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every stack's stop (namespaces included)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drills", default=",".join(CLASSIC), help=f"comma-separated, of: {', '.join(DRILLS)}")
    p.add_argument("--issue22", action="store_true", help=f"the one-host drills of issue 22: {', '.join(ISSUE22)}")
    p.add_argument("--multihost", action="store_true", help=f"the partitions: {', '.join(MULTIHOST)}")
    p.add_argument("--all", action="store_true", help="every drill but sentinel and redis-wipe, then partitions")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--deadline-ms", type=int, default=5000)
    p.add_argument("--fault-s", type=float, default=20.0, help="length of a hang, memory limit or partition")
    p.add_argument("--keep", action="store_true", help="keep each stack's folder (data and logs) even on success")
    args = p.parse_args(argv)
    drills = ([*CLASSIC, *ISSUE22, *MULTIHOST] if args.all else
              [*ISSUE22] * args.issue22 + [*MULTIHOST] * args.multihost or args.drills.split(","))
    unknown = [d for d in drills if d not in DRILLS]
    if unknown:
        p.error(f"unknown drills {unknown}; choose from {', '.join(DRILLS)}")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    cfg = DrillConfig(rate=args.rate, fault_s=args.fault_s)
    results: list[dict[str, Any]] = []
    try:
        for group, overrides, multihost in _groups(drills):
            run_group(group, overrides, multihost, cfg, args.runs, args.deadline_ms, args.keep, results)
    finally:
        print(json.dumps({"drills": results}))
    return 1 if any(r["misses"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
