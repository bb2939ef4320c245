"""One forward pass of a batch on the owner thread, with per-item isolation, and the batcher's counters.

Each observation is validated alone (a PolicyInputError fails only its future). If `predict` raises for a
batch, its items re-run one by one so a poisonous input fails only its own future (one pass per item, on
the failure path only).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from workers.gpu.items import DeadlineExceeded, QueueItem, fail_future
from workers.policies.base import Policy, PolicyResult

# items: computed; invalid: failed validate; errors: failed predict; rejected: refused at submit (failed or
# stopping); dropped: queued items failed by stop() or a load failure; fallbacks: batches re-run one by one.
COUNTERS = ("submitted", "batches", "items", "invalid", "expired", "cancelled", "errors", "fallbacks",
            "rejected", "dropped")


class PassStats:
    """Counters, sums and the batch-size histogram, behind their own lock (never held while taking another)."""

    def __init__(self, max_batch_size: int, on_pass: Callable[[int, float], None] | None = None):
        self._lock = threading.Lock()
        self._on_pass = on_pass  # (batch size, seconds) of each forward pass that succeeded: the curve learns
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.size_counts = [0] * (max_batch_size + 1)  # index = batch size: a ready-made histogram
        # held_s: time the model was kept free for a steady control loop's due request (workers/gpu/sharing.py)
        self.sums = {"queue_s": 0.0, "compute_s": 0.0, "load_s": 0.0, "held_s": 0.0}
        self.batch_ids = itertools.count(1)

    def bump(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counts[counter] += n

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.sums[name] += seconds

    def record(self, items: list[QueueItem], started: float) -> None:
        finished = time.monotonic()
        with self._lock:
            self.counts["batches"] += 1
            self.counts["items"] += len(items)
            self.size_counts[len(items)] += 1
            self.sums["compute_s"] += finished - started
            self.sums["queue_s"] += sum(started - i.future.trace.enqueued_at for i in items)
        if self._on_pass is not None:
            self._on_pass(len(items), finished - started)
        for item in items:
            item.future.trace.finished_at = finished

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, **self.sums, "batch_size_counts": list(self.size_counts)}


def run_batch(policy: Policy, picked: list[QueueItem], stats: PassStats) -> None:
    valid = [item for item in picked if _validate(policy, item, stats)]
    if not valid:
        return
    started = _mark_started(valid, stats)
    try:
        results = policy.predict([item.obs for item in valid])
        if len(results) != len(valid):
            raise RuntimeError(f"predict returned {len(results)} results for {len(valid)} observations")
    except Exception as exc:
        _run_one_by_one(policy, valid, exc, stats)
        return
    stats.record(valid, started)  # before the results, so a woken waiter sees current stats
    for item, result in zip(valid, results, strict=True):
        _deliver(item, result)


def _validate(policy: Policy, item: QueueItem, stats: PassStats) -> bool:
    try:
        policy.validate(item.obs)
    except Exception as exc:  # whatever validation raises belongs to this item alone
        stats.bump("invalid")
        fail_future(item.future, exc)
        return False
    return True


def _run_one_by_one(policy: Policy, items: list[QueueItem], batch_exc: Exception, stats: PassStats) -> None:
    """The batch's pass raised: isolate the culprit by giving every item its own pass."""
    stats.bump("fallbacks" if len(items) > 1 else "errors")
    if len(items) == 1:  # nothing to isolate: the lone item is the culprit
        fail_future(items[0].future, batch_exc)
        return
    for item in items:
        if item.deadline is not None and time.monotonic() >= item.deadline:
            stats.bump("expired")
            fail_future(item.future, DeadlineExceeded(item.job_id, time.monotonic() - item.deadline))
            continue
        started = _mark_started([item], stats)
        try:
            (result,) = policy.predict([item.obs])
        except Exception as exc:
            stats.bump("errors")
            fail_future(item.future, exc)
            continue
        stats.record([item], started)
        _deliver(item, result)


def _mark_started(items: list[QueueItem], stats: PassStats) -> float:
    started, batch_id = time.monotonic(), next(stats.batch_ids)
    for index, item in enumerate(items):
        trace = item.future.trace
        trace.started_at, trace.batch_id, trace.batch_size = started, batch_id, len(items)
        trace.batch_index = index
    return started


def _deliver(item: QueueItem, result: PolicyResult) -> None:
    trace = item.future.trace
    # Copy, not update: a policy may share one timings dict across a batch's results.
    result.timings_ms = {**result.timings_ms, "queue_ms": (trace.started_at - trace.enqueued_at) * 1e3}
    item.future.set_result(result)
