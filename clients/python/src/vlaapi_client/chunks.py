"""Hand out action chunks one control tick at a time (compare openpi_client's ActionChunkBroker)."""
from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np


class ChunkPlayer:
    """A queue of actions handed out in order, one per `next()`; a pushed chunk joins the end of the queue.

    No action is ever discarded: an action not yet played was paid for and is the one the robot expects next
    (replacing it made the one-action policies starve). `horizon` caps how many actions of each chunk are
    queued (open-loop horizon). `wants_more(latency_s, period_s)` says when to ask for the next chunk: only
    when the queued actions cover less than the expected latency, so a controller never asks for more than
    the control rate consumes. `refill_at` keeps the older count threshold (`needs_refill`). Thread-safe: one
    thread may `push` while the control thread calls `next`.
    """

    def __init__(self, horizon: int | None = None, refill_at: int = 0):
        self.horizon, self.refill_at = horizon, refill_at
        self._queue: deque[np.ndarray] = deque()
        self._lock = threading.Lock()

    def push(self, actions: np.ndarray) -> None:
        """A new chunk, (T, D) or a single (D,) action; its first `horizon` actions join the queue."""
        arr = np.asarray(actions, dtype=np.float64)
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.ndim != 2 or not len(arr):
            raise ValueError(f"a chunk is (T, D) with T >= 1; got shape {arr.shape}")
        with self._lock:
            self._queue.extend(arr[: self.horizon] if self.horizon else arr)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def needs_refill(self) -> bool:
        return self.remaining <= self.refill_at

    def wants_more(self, latency_s: float, period_s: float) -> bool:
        """True when the queued actions last fewer ticks than a request takes: ask now or starve later.

        With a latency under one period this is true only once the queue is empty, right after a tick took
        its last action, which leaves a whole period for the request: one request per action, no more.
        """
        return self.remaining < max(1, math.ceil(latency_s / period_s))

    def next(self) -> np.ndarray | None:
        """The next action, or None when none is left (the controller must hold or stop)."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
