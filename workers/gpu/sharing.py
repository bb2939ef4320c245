"""How background (replay) work shares the model with interactive requests.

`Sharing` holds the batcher's two rules. The cap: while interactive traffic is about (an arrival within
INTERACTIVE_RECENT_S), a batch takes at most `max_background` replay items, so passes stay short; a replay
alone runs full batches. The hold (`Cadence`, optional):

A robot's control loop calls at a steady rate (say 10 Hz). While a replay shares the GPU worker, an
interactive request that arrives during a replay pass waits for that pass to end. If the interactive
arrivals have a steady period, the next one is predictable, and a background pass that would still be
running when it lands can simply not be started: the model then sits idle for a moment and the request
finds it free. The replay keeps every pass that fits in the gaps.

The batcher reports interactive arrivals and the duration of its background-only passes; `hold_until`
says whether background work should wait, and until when. It never holds when there is no cadence to
protect (fewer than MIN_ARRIVALS arrivals, or gaps that jitter by more than MAX_JITTER of the period, as
with several clients at different rates), when the expected request is overdue by more than its grace (the
loop paused or stopped), or when a background pass takes more than half the period (holding then could
starve the replay). Not thread-safe: the batcher calls it under its lock, except for the pass durations,
which only its owner thread writes and reads.
"""
from __future__ import annotations

import time

INTERACTIVE_RECENT_S = 1.0  # interactive traffic this recent keeps the background cap (and the hold) in force
MIN_ARRIVALS = 4  # gaps seen before a period is trusted
MAX_JITTER = 0.25  # mean absolute deviation of the gaps, as a fraction of the period, above which we never hold
ALPHA = 0.2  # weight of the newest sample in the moving averages
GUARD_S = 0.002  # fixed slack on both sides of the expected arrival, for the hop from client to batcher


class Cadence:
    def __init__(self) -> None:
        self.last: float | None = None  # time.monotonic() of the latest interactive arrival
        self.period: float | None = None
        self.jitter = 0.0
        self.gaps = 0
        self.background_pass_s = 0.0

    def arrival(self, now: float) -> None:
        if self.last is not None:
            gap = now - self.last
            if self.period is None:
                self.period = gap
            else:
                self.jitter += ALPHA * (abs(gap - self.period) - self.jitter)
                self.period += ALPHA * (gap - self.period)
            self.gaps += 1
        self.last = now

    def background_pass(self, seconds: float) -> None:
        self.background_pass_s += ALPHA * (seconds - self.background_pass_s) if self.background_pass_s else seconds

    def steady(self) -> bool:
        return (self.gaps >= MIN_ARRIVALS and self.period is not None and self.period > 0
                and self.jitter <= MAX_JITTER * self.period and self.background_pass_s <= 0.5 * self.period)

    def hold_until(self, now: float) -> float | None:
        """The time.monotonic() until which background work should wait, or None to run it now."""
        if not self.steady() or self.last is None or self.period is None:
            return None
        slack = 2.0 * self.jitter + GUARD_S
        expected = self.last + self.period
        if now > expected + slack:
            return None  # overdue: the loop paused or stopped, or this one is late; don't idle the model on it
        if now + self.background_pass_s + slack < expected:
            return None  # a background pass started now ends before the request is due
        return expected + slack


class Sharing:
    """The cap and the hold for one batcher; not thread-safe (the batcher calls it under its lock, except
    `recent`, a read of one float, and `passed`, from the owner thread, the only one that reads its figure)."""

    def __init__(self, max_background: int | None, hold_for_cadence: bool) -> None:
        if max_background is not None and max_background < 1:
            raise ValueError("max_background_per_batch must be >= 1 (or None), else background never runs")
        self.max_background = max_background
        self.cadence = Cadence() if hold_for_cadence else None
        self.last_interactive = float("-inf")

    def interactive(self, now: float) -> None:
        self.last_interactive = now
        if self.cadence is not None:
            self.cadence.arrival(now)

    def recent(self) -> bool:
        return time.monotonic() - self.last_interactive <= INTERACTIVE_RECENT_S

    def cap(self) -> int | None:
        """Replay items one batch may take now (None: no limit)."""
        return self.max_background if self.recent() else None

    def passed(self, background_only: bool, seconds: float) -> None:
        if self.cadence is not None and background_only:
            self.cadence.background_pass(seconds)

    def hold_s(self, interactive_queued: int) -> float:
        """Seconds queued background work should wait for an expected interactive item (0: run it)."""
        if self.cadence is None or interactive_queued or not self.recent():
            return 0.0
        now = time.monotonic()
        until = self.cadence.hold_until(now)
        return 0.0 if until is None else until - now
