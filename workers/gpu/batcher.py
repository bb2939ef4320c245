"""In-process micro-batcher: Celery task threads submit, one owner thread holds the model.

celery-batches cannot install with Celery 5.7, so the GPU worker runs the `threads` pool; each task calls
`submit()` and blocks on the future, while one owner thread calls the loader (CUDA is first touched there,
never in `worker_process_init` nor in a parent that forks) and runs `Policy.predict` on batches.

Batching (as Ray Serve's `@serve.batch`, Triton's queue delay): the owner blocks for the first item, then
gathers until `max_batch_size` items are eligible or `max_wait_ms` have passed since the oldest queued item
arrived. A full queue runs at once, as does one holding an item whose deadline falls inside the window, and
what queued during a pass runs right after it. The window opens only when there is sign of concurrency (the
last pick saw more than one item), so a lone client never pays it. Priority 0 (interactive) goes before
>= 1 (replay), FIFO within a priority; `max_background_per_batch` caps replay items per batch while interactive
traffic is about (seen in the last second), so a replay cannot swell interactive latency, yet runs full
batches when alone (replay may starve under interactive overload). With `hold_for_cadence`, a background pass
that would still run when a steady control loop's next request is due is not started (workers/gpu/sharing.py).

Which items a pass takes is workers/gpu/schedule.py's rule: "edf" (earliest deadline first, a batch size the
curve learned from each pass says meets the earliest deadline, hopeless items failed at once with
DeadlineExceeded and the reason, uncomputed) or "fifo" (the old rule, the benchmarks' baseline). Deadlines are
monotonic seconds (items.py converts); a cancelled future is skipped; a pass isolates bad inputs (passes.py).
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from workers.gpu.items import (
    BatcherStopped,
    BatchFuture,
    DeadlineExceeded,
    ItemTrace,
    ModelUnavailable,
    QueueItem,
    fail_future,
)
from workers.gpu.passes import PassStats, run_batch
from workers.gpu.schedule import plan
from workers.gpu.sharing import Sharing
from workers.policies.base import Observation, Policy, PolicySpec
from workers.wire.curve import LatencyCurve, Line

INTERACTIVE = 0
BACKGROUND = 1


class MicroBatcher:
    """Micro-batches observations for one policy; see the module docstring for the rules."""

    def __init__(self, loader: Callable[[], Policy], *, max_batch_size: int, max_wait_ms: float, name: str,
                 max_background_per_batch: int | None = None, hold_for_cadence: bool = False,
                 schedule: str = "edf", curve_prior: Line | None = None, margin_ms: float = 0.0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1e3
        self._sharing = Sharing(max_background_per_batch, hold_for_cadence)
        plan([], 0.0, LatencyCurve(1), 1, policy=schedule)  # refuse an unknown policy now, not in the owner
        self.schedule, self.margin_s = schedule, margin_ms / 1e3  # margin: the safety stage after the pass
        self.curve = LatencyCurve(max_batch_size, prior=curve_prior)  # learns from each successful pass
        self._loader = loader
        self._cond = threading.Condition()
        self._heap: list[QueueItem] = []
        self._n_queued = [0, 0]  # [interactive, background], so "is it full?" costs O(1)
        self._first_at: float | None = None  # arrival of the oldest queued item: the window's start
        self._last_batch = 0  # items picked plus left queued at the last pick: recent concurrency
        self._earliest_deadline: float | None = None
        self._seq = itertools.count()
        self._state = "created"
        self._error: BaseException | None = None
        self._failure = ""  # how it failed, for ModelUnavailable's message
        self._policy: Policy | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()  # set when loading ends, either way
        self._stats = PassStats(max_batch_size, on_pass=self.curve.observe)
        self._max_depth = 0

    def start(self) -> None:
        """Launch the owner thread; it loads the model, then serves. Items submitted earlier wait."""
        with self._cond:
            if self._thread is not None or self._stopping:
                raise RuntimeError(f"batcher {self.name!r} was already started or stopped")
            self._state = "loading"
            self._thread = threading.Thread(target=self._owner_main, name=f"batcher-{self.name}", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading ends (or `timeout`); True if the model is ready."""
        self._loaded.wait(timeout)
        return self.ready

    @property
    def state(self) -> str:
        """"created" | "loading" | "ready" | "failed" | "stopped": lets /health tell loading from down."""
        return self._state

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def error(self) -> BaseException | None:
        """The loader's exception when state is "failed"."""
        return self._error

    @property
    def spec(self) -> PolicySpec | None:
        """The loaded policy's spec; None until loading has succeeded."""
        return self._policy.spec if self._policy is not None else None

    def stop(self, timeout: float | None = None, *, drain: bool = True) -> bool:
        """Refuse new work; run (drain=True) or fail (drain=False) what is queued, then end the owner.

        Returns True if the owner thread exited within `timeout`. Whatever is still queued then fails
        with BatcherStopped, so no item is left pending; a batch already in its forward pass completes.
        """
        with self._cond:
            self._stopping = True
            pending = [] if drain else self._take_all()
            self._cond.notify_all()
        self._fail_items(pending, lambda: BatcherStopped(f"batcher {self.name!r} stopped"))
        exited = True
        if self._thread is not None:
            self._thread.join(timeout)
            exited = not self._thread.is_alive()
        with self._cond:
            leftover = self._take_all()
            if self._state != "failed":
                self._state = "stopped"
        self._loaded.set()  # nobody may wait_ready() forever on a batcher that will never load
        self._fail_items(leftover, lambda: BatcherStopped(f"batcher {self.name!r} stopped before this item ran"))
        return exited

    def submit(self, obs: Observation, *, priority: int = INTERACTIVE, deadline: float | None = None,
               job_id: str | None = None, tier_rank: int = 0) -> BatchFuture:
        """Queue one observation; the future resolves to its PolicyResult or to the item's own error.

        `priority`: 0 interactive, 1 (or more) replay/background. `deadline`: a time.monotonic() value (see
        monotonic_deadline) after which the item is dropped uncomputed. `tier_rank`: lower goes first among equal
        deadlines. Never blocks on the model: a failed or stopped batcher returns an already failed future. The
        result's timings_ms gains "queue_ms" (submit to start of its pass); `future.trace` holds the raw
        timestamps. Once its pass has started, `future.cancel()` returns False and the result is computed anyway.
        """
        if priority < 0:
            raise ValueError("priority must be >= 0 (0 is interactive)")
        now = time.monotonic()
        fut = BatchFuture()
        fut.trace = ItemTrace(enqueued_at=now)
        with self._cond:
            rejection = self._rejection()
            if rejection is None:
                heapq.heappush(self._heap, QueueItem(priority, next(self._seq), obs, fut, deadline, job_id, tier_rank))
                self._n_queued[priority > 0] += 1
                self._first_at = now if self._first_at is None else self._first_at
                if deadline is not None and (self._earliest_deadline is None or deadline < self._earliest_deadline):
                    self._earliest_deadline = deadline
                self._stats.bump("submitted")
                if priority == INTERACTIVE:
                    self._sharing.interactive(now)
                self._max_depth = max(self._max_depth, len(self._heap))
                self._cond.notify()
            else:
                self._stats.bump("rejected")
        if rejection is not None:
            fail_future(fut, rejection)
        return fut

    def interactive_recent(self) -> bool:
        """Whether an interactive request arrived within INTERACTIVE_RECENT_S (background work yields then)."""
        return self._sharing.recent()

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics; `queue_depth` includes cancelled items not yet skipped."""
        with self._cond:
            out: dict[str, Any] = self._stats.snapshot()
            out.update(state=self._state, queue_depth=len(self._heap), max_queue_depth=self._max_depth,
                       schedule=self.schedule, curve=self.curve.to_dict())
        return out

    def _rejection(self) -> BaseException | None:
        """Why a new item cannot be queued, if it cannot. Caller holds the lock."""
        if self._state == "failed":
            return ModelUnavailable(self.name, self._error, self._failure)
        if self._stopping:
            return BatcherStopped(f"batcher {self.name!r} is stopping or stopped")
        return None

    def _owner_main(self) -> None:
        if not self._load():
            return
        try:
            while (picked := self._next_batch()) is not None:
                began = time.monotonic()
                try:
                    run_batch(self._policy, picked, self._stats)
                except Exception as exc:  # a bug here must not strand the batch's waiting task threads
                    self._fail_items(picked, lambda exc=exc: exc)
                self._sharing.passed(all(i.priority > 0 for i in picked), time.monotonic() - began)
        except BaseException as exc:  # owner gone: fail now and later items instead of letting them hang
            self._enter_failed(exc, "lost its owner thread")
            raise

    def _enter_failed(self, exc: BaseException, what: str) -> None:
        with self._cond:
            self._state, self._error, self._failure = "failed", exc, what
            pending = self._take_all()
        self._loaded.set()
        self._fail_items(pending, lambda: ModelUnavailable(self.name, exc, what))

    def _load(self) -> bool:
        began = time.monotonic()
        try:
            policy = self._loader()
        except BaseException as exc:  # any loader failure is reported on the futures, never lost
            self._enter_failed(exc, "failed to load")
            return False
        with self._cond:
            self._policy, self._stats.sums["load_s"] = policy, time.monotonic() - began
            if self._state == "loading":  # stop() may have timed out meanwhile
                self._state = "ready"
        self._loaded.set()
        return True

    def _next_batch(self) -> list[QueueItem] | None:
        """Block for work, gather per the batching rule, take one batch. None means stop."""
        with self._cond:
            while True:
                while not self._heap and not self._stopping:
                    self._cond.wait()
                if not self._heap:
                    return None
                hold = 0.0 if self._stopping else self._sharing.hold_s(self._n_queued[0])
                if hold > 0:  # only background is queued, and a control loop's request is due: keep the model free
                    began = time.monotonic()
                    self._cond.wait(hold)  # an interactive submit wakes us at once
                    self._stats.add("held_s", time.monotonic() - began)
                    continue
                wait_s = self._gather_wait_s()
                if wait_s <= 0:
                    break
                self._cond.wait(wait_s)  # woken early by each submit, to re-check "full"
            picked, expired = self._take()
        for item, why in expired:
            fail_future(item.future, DeadlineExceeded(item.job_id, item.future.trace.picked_at - item.deadline, why))
        return picked

    def _gather_wait_s(self) -> float:
        """How much longer to wait for company; <= 0 means run now. Caller holds the lock."""
        cap = self._sharing.cap()
        background = self._n_queued[1] if cap is None else min(self._n_queued[1], cap)
        queued = self._n_queued[0] + background
        if self._stopping or queued >= self.max_batch_size:
            return 0.0
        if queued == 1 and self._last_batch <= 1:
            # No sign of concurrency (the last pass served one item and nothing queued behind it): a lone
            # client would only pay the wait. Under load, items queue during each pass and batches grow.
            return 0.0
        end = self._first_at + self.max_wait_s
        if self._earliest_deadline is not None and self._earliest_deadline <= end:
            return 0.0  # waiting for company would let that item expire
        return end - time.monotonic()

    def _take(self) -> tuple[list[QueueItem], list[tuple[QueueItem, str]]]:
        """Take one batch by the schedule; return (to run, [(ended, why)]). Caller holds the lock."""
        now = time.monotonic()
        live = [item for item in self._heap if not item.future.cancelled()]
        cancelled = len(self._heap) - len(live)
        chosen = plan(live, now, self.curve, self.max_batch_size, policy=self.schedule,
                      max_background=self._sharing.cap(), margin_s=self.margin_s)
        self._heap = chosen.rest  # still pending: a waiter's cancel() still drops them
        heapq.heapify(self._heap)
        run = [i for i in chosen.run if i.future.set_running_or_notify_cancel()]  # a cancel may land meanwhile
        for item in run + [i for i, _ in chosen.expired]:
            item.future.trace.picked_at = now
        self._stats.bump("cancelled", cancelled + len(chosen.run) - len(run))
        self._stats.bump("expired", len(chosen.expired))
        self._n_queued = [sum(i.priority == 0 for i in self._heap), sum(i.priority > 0 for i in self._heap)]
        self._last_batch = len(run) + len(self._heap)
        self._first_at = min((i.future.trace.enqueued_at for i in self._heap), default=None)
        self._earliest_deadline = min((i.deadline for i in self._heap if i.deadline is not None), default=None)
        return run, chosen.expired

    def _take_all(self) -> list[QueueItem]:
        """Empty the queue (stop or load failure). Caller holds the lock."""
        items, self._heap = self._heap, []
        self._stats.bump("dropped", len(items))
        self._n_queued = [0, 0]
        self._first_at = self._earliest_deadline = None
        return items

    def _fail_items(self, items: list[QueueItem], make_exc: Callable[[], BaseException]) -> None:
        for item in items:
            fail_future(item.future, make_exc())
