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

    Chunk switching (what real-time chunking needs): `remainder()` is what a request carries, the queued
    actions (the next one to execute first) and the count played so far; `switch(chunk, since)` replaces the
    queue with the new chunk, less the actions played since that request was sent (their time has passed: the
    new chunk's step i is the remainder's step i). `switches` records, per switch, the tick it takes effect
    at and the gap between the new chunk's first action and the old chunk's plan for that tick.
    """

    def __init__(self, horizon: int | None = None, refill_at: int = 0):
        self.horizon, self.refill_at = horizon, refill_at
        self._queue: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self.played = 0
        self.switches: list[tuple[int, float]] = []

    @staticmethod
    def _chunk(actions: np.ndarray) -> np.ndarray:
        arr = np.asarray(actions, dtype=np.float64)
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.ndim != 2 or not len(arr):
            raise ValueError(f"a chunk is (T, D) with T >= 1; got shape {arr.shape}")
        return arr

    def push(self, actions: np.ndarray) -> None:
        """A new chunk, (T, D) or a single (D,) action; its first `horizon` actions join the queue."""
        arr = self._chunk(actions)
        with self._lock:
            self._queue.extend(arr[: self.horizon] if self.horizon else arr)

    def remainder(self) -> tuple[np.ndarray | None, int]:
        """(the queued actions, next first, or None if none; the number played so far), read together."""
        with self._lock:
            return (np.stack(self._queue) if self._queue else None), self.played

    def switch(self, actions: np.ndarray, since: int) -> int:
        """Replace the queue with `actions` less the ones whose tick passed since the request (sent when
        `played` was `since`) and cut at `horizon`; returns how many were skipped."""
        arr = self._chunk(actions)
        with self._lock:
            skip = min(self.played - since, len(arr))
            new = arr[skip : self.horizon] if self.horizon else arr[skip:]
            if len(new) and self._queue:
                self.switches.append((self.played, float(np.abs(new[0] - self._queue[0]).max())))
            elif len(new):
                self.switches.append((self.played, float("nan")))
            self._queue = deque(new)
            return skip

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
            if not self._queue:
                return None
            self.played += 1
            return self._queue.popleft()

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
