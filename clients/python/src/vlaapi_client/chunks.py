"""Hand out an action chunk one control tick at a time (compare openpi_client's ActionChunkBroker)."""
from __future__ import annotations

import threading

import numpy as np


class ChunkPlayer:
    """Holds the latest chunk and gives out its actions in order, one per `next()`.

    `horizon` caps how many actions of each chunk are executed (open-loop horizon) before a fresh one is
    needed; `refill_at` says how many actions may remain when `needs_refill` turns true, so a controller can
    ask for the next chunk while it still has actions to play. Thread-safe: one thread may `push` while the
    control thread calls `next`.
    """

    def __init__(self, horizon: int | None = None, refill_at: int = 0):
        self.horizon, self.refill_at = horizon, refill_at
        self._chunk: np.ndarray | None = None
        self._i = 0
        self._lock = threading.Lock()

    def push(self, actions: np.ndarray) -> None:
        """A new chunk, (T, D) or a single (D,) action; replaces what is left of the old one."""
        arr = np.asarray(actions, dtype=np.float64)
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.ndim != 2 or not len(arr):
            raise ValueError(f"a chunk is (T, D) with T >= 1; got shape {arr.shape}")
        with self._lock:
            self._chunk = arr[: self.horizon] if self.horizon else arr
            self._i = 0

    @property
    def remaining(self) -> int:
        with self._lock:
            return 0 if self._chunk is None else len(self._chunk) - self._i

    @property
    def needs_refill(self) -> bool:
        return self.remaining <= self.refill_at

    def next(self) -> np.ndarray | None:
        """The next action, or None when the chunk is used up (the controller must hold or stop)."""
        with self._lock:
            if self._chunk is None or self._i >= len(self._chunk):
                return None
            action = self._chunk[self._i]
            self._i += 1
            return action

    def reset(self) -> None:
        with self._lock:
            self._chunk, self._i = None, 0
