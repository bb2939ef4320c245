"""The micro-batcher's vocabulary: the errors it sets on futures, and the per-item trace and queue entry."""
from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from workers.policies.base import Observation, PolicyResult


class BatcherError(Exception):
    """Base of the errors a batcher sets on a future instead of a result."""


class DeadlineExceeded(BatcherError, TimeoutError):
    """The item's deadline passed before its forward pass started; it was not computed."""

    def __init__(self, job_id: str | None, late_by_s: float, reason: str | None = None):
        # reason: the scheduler's words when it ended the item before its deadline (workers/gpu/schedule.py)
        super().__init__(f"job {job_id or '?'} " + (reason or f"expired {late_by_s * 1e3:.1f} ms before it could "
                                                             "be computed"))
        self.job_id = job_id
        self.late_by_s = late_by_s
        self.reason = reason


class ModelUnavailable(BatcherError):
    """The loader raised (or the owner thread died): this batcher will never serve. `__cause__` says why."""

    def __init__(self, name: str, cause: BaseException, what: str = "failed to load"):
        super().__init__(f"model {name!r} {what}: {type(cause).__name__}: {cause}")
        self.__cause__ = cause


class BatcherStopped(BatcherError):
    """The batcher was stopped (worker shutdown) before the item ran."""


def monotonic_deadline(epoch_s: float) -> float:
    """Map a wall-clock deadline (time.time() seconds, as stored on a job) onto time.monotonic()."""
    return time.monotonic() + (epoch_s - time.time())


@dataclass
class ItemTrace:
    """Monotonic timestamps of one item's life, for metrics, logs and latency tests."""

    enqueued_at: float
    picked_at: float | None = None  # taken off the queue
    started_at: float | None = None  # its forward pass began
    finished_at: float | None = None
    batch_id: int | None = None
    batch_size: int | None = None
    batch_index: int | None = None  # its place in the batch: 0 reports the batch's size once (telemetry)


class BatchFuture(Future[PolicyResult]):
    """A future that also carries the item's ItemTrace."""

    trace: ItemTrace


@dataclass(order=True)
class QueueItem:
    priority: int
    seq: int  # FIFO tie-break within a priority
    obs: Observation = field(compare=False)
    future: BatchFuture = field(compare=False)
    deadline: float | None = field(compare=False)
    job_id: str | None = field(compare=False)
    tier_rank: int = field(default=0, compare=False)  # the scheduler's tie-break among equal deadlines


def fail_future(fut: Future, exc: BaseException) -> None:
    """Fail a future unless it is already settled or its waiter cancelled it while still queued."""
    if fut.done() or (not fut.running() and not fut.set_running_or_notify_cancel()):
        return
    fut.set_exception(exc)
