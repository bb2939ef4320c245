"""Batch formation: which waiting items one forward pass takes, and which are ended uncomputed.

A pure rule (no threads, no I/O, time passed in) shared by the GPU worker's MicroBatcher and by the
discrete-event simulator (ops/bench/fleet_des.py), so what the simulator says about a fleet is what the
worker does.

"edf" (the default):
- order: interactive (priority 0) before replay, then earliest deadline first, then tier (lower rank
  first), then arrival;
- an item that cannot make its deadline even alone (now + latency(1) > deadline) is ended before compute,
  with the reason; so is one left waiting that could not make it after this pass either;
- batch size: from the learned batch-latency curve, the size n (at most max_batch) that serves the most
  items on time over this pass and the next; the pass takes, in that order, the first n items it ends in
  time for, so the earliest deadline in the batch is met (replay items capped by `max_background`).
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
         max_background: int | None = None, margin_s: float = 0.0) -> Plan[T]:
    """Split `items` into one pass, the ended, and the rest; see the module docstring. `margin_s`: what the
    answer still needs after its pass (the safety stage, the wake-up): a pass must end that much before."""
    if policy not in POLICIES:
        raise ValueError(f"unknown schedule policy {policy!r}; expected one of {POLICIES}")
    edf = policy == "edf"
    out: Plan[T] = Plan()
    alone = curve.predict(1) if edf else 0.0
    viable: list[T] = []
    for item in sorted(items, key=_edf_key if edf else _fifo_key):
        if item.deadline is not None and now + alone >= item.deadline - margin_s and (edf or now >= item.deadline):
            left = item.deadline - now
            why = (f"deadline passed {_ms(-left)} before its pass could start" if left <= 0 else
                   f"cannot make its deadline: a pass takes about {_ms(alone)}, {_ms(left)} were left")
            out.expired.append((item, why))
        else:
            viable.append(item)
    size = _best_size(viable, now + margin_s, curve, max_batch, max_background) if edf else max_batch
    finish = now + margin_s + curve.predict(size) if edf else -math.inf
    for item in viable:
        capped = item.priority > 0 and max_background is not None and \
            sum(i.priority > 0 for i in out.run) >= max_background
        if len(out.run) < size and not capped and _deadline(item) >= finish:
            out.run.append(item)
        else:
            out.rest.append(item)
    out.expected_s = curve.predict(len(out.run)) if out.run else 0.0
    if edf and out.run:
        _end_hopeless(out, now + margin_s + out.expected_s + alone)
    return out


def _deadline(item: Schedulable) -> float:
    return math.inf if item.deadline is None else item.deadline


def _on_time(order: list[T], start: float, curve: LatencyCurve, n: int, cap: int | None) -> list[T]:
    """The first n items of `order` (replay capped) that a pass of n started at `start` finishes in time."""
    finish, taken, background = start + curve.predict(n), [], 0
    for item in order:
        if len(taken) == n:
            break
        if _deadline(item) >= finish and not (item.priority > 0 and cap is not None and background >= cap):
            taken.append(item)
            background += item.priority > 0
    return taken


def _best_size(order: list[T], now: float, curve: LatencyCurve, max_batch: int, cap: int | None) -> int:
    """The pass size that serves the most items on time over this pass and the next (a one-pass look-ahead:
    a short pass for an urgent item may leave a full one for the rest, a full pass may not). Ties go to the
    size that serves more now."""
    best, best_value = 1, (-1, -1)
    for n in range(1, min(max_batch, len(order)) + 1):
        first = _on_time(order, now, curve, n, cap)
        if len(first) < n and n > 1:
            continue  # a bigger pass that takes no more items only ends later
        chosen = {id(i) for i in first}
        left = [i for i in order if id(i) not in chosen]
        start = now + curve.predict(n)
        second = max((len(_on_time(left, start, curve, m, cap)) for m in range(1, min(max_batch, len(left)) + 1)),
                     default=0)
        value = (len(first) + second, len(first))
        if value > best_value:
            best, best_value = n, value
    return best
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
