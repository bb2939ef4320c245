"""Batch formation: which waiting items one forward pass takes, and which are ended uncomputed.

A pure rule (no threads, no I/O, time passed in) shared by the GPU worker's MicroBatcher and by the
discrete-event simulator (ops/bench/fleet_des.py), so what the simulator says about a fleet is what the
worker does.

"edf" (the default):
- order: interactive (priority 0) before replay, then earliest deadline first, then tier (lower rank
  first), then arrival;
- an item that cannot make its deadline even alone (now + latency(1) > deadline) is ended before compute,
  with the reason; so is one left waiting that could not make it after this pass either;
- batch size: the longest prefix of that order whose pass, by the learned batch-latency curve, still ends
  before the earliest deadline in it (at most max_batch; replay items capped by `max_background`).
"fifo" is the batcher as it was (the baseline): priority, then arrival, up to max_batch; only items whose
deadline has already passed are dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from workers.wire.curve import LatencyCurve

POLICIES = ("edf", "fifo")


class Schedulable(Protocol):
    priority: int  # 0 interactive, >= 1 replay
    seq: int  # arrival order
    deadline: float | None  # same clock as `now`
    tier_rank: int  # lower is served first among equal deadlines


T = TypeVar("T", bound=Schedulable)


@dataclass
class Plan(Generic[T]):
    run: list[T] = field(default_factory=list)
    expired: list[tuple[T, str]] = field(default_factory=list)  # (item, why it was ended uncomputed)
    rest: list[T] = field(default_factory=list)  # still waiting
    expected_s: float = 0.0  # the curve's figure for this pass


def _edf_key(item: Schedulable) -> tuple:
    deadline = math.inf if item.deadline is None else item.deadline
    return item.priority > 0, deadline, item.tier_rank, item.seq


def _fifo_key(item: Schedulable) -> tuple:
    return item.priority > 0, item.seq


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f} ms"


def plan(items: list[T], now: float, curve: LatencyCurve, max_batch: int, *, policy: str = "edf",
         max_background: int | None = None) -> Plan[T]:
    """Split `items` into one pass, the ended, and the rest; see the module docstring."""
    if policy not in POLICIES:
        raise ValueError(f"unknown schedule policy {policy!r}; expected one of {POLICIES}")
    edf = policy == "edf"
    out: Plan[T] = Plan()
    alone = curve.predict(1) if edf else 0.0
    background = 0
    earliest = math.inf
    for item in sorted(items, key=_edf_key if edf else _fifo_key):
        if item.deadline is not None and now + alone >= item.deadline and (edf or now >= item.deadline):
            left = item.deadline - now
            why = (f"deadline passed {_ms(-left)} before its pass could start" if left <= 0 else
                   f"cannot make its deadline: a pass takes about {_ms(alone)}, {_ms(left)} were left")
            out.expired.append((item, why))
            continue
        if len(out.run) >= max_batch or (item.priority > 0 and max_background is not None
                                         and background >= max_background):
            out.rest.append(item)
            continue
        deadline = math.inf if item.deadline is None else item.deadline
        if edf and out.run and now + curve.predict(len(out.run) + 1) > min(earliest, deadline):
            out.rest.append(item)  # a bigger pass would end after the earliest deadline it holds
            continue
        out.run.append(item)
        earliest = min(earliest, deadline)
        background += item.priority > 0
    out.expected_s = curve.predict(len(out.run)) if out.run else 0.0
    if edf and out.run:
        _end_hopeless(out, now + out.expected_s + alone)
    return out


def _end_hopeless(out: Plan[T], earliest_finish: float) -> None:
    """End now, rather than at the next pick, what cannot finish even in the pass right after this one."""
    keep: list[T] = []
    for item in out.rest:
        if item.deadline is not None and item.deadline < earliest_finish:
            out.expired.append((item, "cannot make its deadline: the queue ahead of it ends "
                                f"{_ms(earliest_finish - item.deadline)} too late"))
        else:
            keep.append(item)
    out.rest = keep
