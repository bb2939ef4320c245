"""The batch-latency curve: how long one forward pass of a batch of n takes, learned online.

Pure Python (no torch): the GPU worker learns it from its own pass timings and publishes it in its
heartbeat; the web reads it back to tell, at admission, whether a deadline can still be met
(web/services/admission.py); the discrete-event simulator (ops/bench/fleet_des.py) drives it with a given
curve. Compare Clockwork's per-batch-size latency profiles and Clipper's adaptive batching.

Model: a per-size EWMA of observed pass times, and a least-squares line a + b·n through the sizes seen, for
the sizes not yet seen. Until anything is seen, a prior line (given, or zero: a fresh worker claims nothing
it has not measured, so nothing is ended on a guess).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

ALPHA = 0.2  # weight of the newest pass in a size's moving average
MIN_PASSES = 2  # passes of a size before its own average is trusted over the line


@dataclass(frozen=True)
class Line:
    """latency(n) = a + b·n seconds (n >= 1)."""

    a: float
    b: float

    def __call__(self, n: int) -> float:
        return max(0.0, self.a + self.b * n)

    @classmethod
    def through(cls, n1: int, s1: float, n2: int, s2: float) -> Line:
        b = (s2 - s1) / (n2 - n1)
        return cls(s1 - b * n1, b)


class LatencyCurve:
    """Learned seconds per forward pass by batch size; `predict(n)` is non-decreasing in n. Thread-safe: the
    owner thread observes and predicts while the heartbeat thread reads `to_dict`."""

    def __init__(self, max_batch: int, prior: Line | None = None, alpha: float = ALPHA):
        self.max_batch = max_batch
        self.prior = prior
        self.alpha = alpha
        self._mean: dict[int, float] = {}
        self._count: dict[int, int] = {}
        self._line: Line | None = None
        self._lock = threading.Lock()

    def observe(self, n: int, seconds: float) -> None:
        """One pass of n items took `seconds` (owner thread only)."""
        if n < 1 or seconds < 0:
            return
        with self._lock:
            self._observe(n, seconds)

    def _observe(self, n: int, seconds: float) -> None:
        old = self._mean.get(n)
        self._mean[n] = seconds if old is None else old + self.alpha * (seconds - old)
        self._count[n] = self._count.get(n, 0) + 1
        self._line = self._fit()

    def _fit(self) -> Line | None:
        pts = [(n, s) for n, s in self._mean.items()]
        if len(pts) == 1:
            n, s = pts[0]
            slope = self.prior.b if self.prior is not None else 0.0
            return Line(s - slope * n, slope)  # one size seen: the prior's slope through it (flat without one)
        if not pts:
            return None
        mn = sum(n for n, _ in pts) / len(pts)
        ms = sum(s for _, s in pts) / len(pts)
        var = sum((n - mn) ** 2 for n, _ in pts)
        b = max(0.0, sum((n - mn) * (s - ms) for n, s in pts) / var)  # a bigger batch is never faster
        return Line(ms - b * mn, b)

    def predict(self, n: int) -> float:
        """Seconds a pass of n items is expected to take (0.0 when nothing is known)."""
        n = max(1, n)
        with self._lock:
            return self._predict(n)

    def _predict(self, n: int) -> float:
        line = self._line or self.prior
        guess = line(n) if line is not None else 0.0
        if self._count.get(n, 0) >= MIN_PASSES:
            guess = self._mean[n]
        # Never below a smaller size's figure: noise must not make a bigger batch look cheaper.
        below = [self._mean[k] for k in self._mean if k < n and self._count[k] >= MIN_PASSES]
        return max([guess, *below])

    @property
    def known(self) -> bool:
        return bool(self._mean) or self.prior is not None

    def to_dict(self) -> dict[str, Any]:
        """What a heartbeat carries: the line and the per-size means (ms), for admission and dashboards."""
        with self._lock:
            line, points = self._line or self.prior, sorted(self._mean.items())
        return {"a_ms": round(line.a * 1e3, 3) if line else None, "b_ms": round(line.b * 1e3, 3) if line else None,
                "max_batch": self.max_batch,
                "points_ms": {str(n): round(s * 1e3, 3) for n, s in points}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyCurve:
        curve = cls(int(d.get("max_batch") or 1))
        if d.get("a_ms") is not None:
            curve.prior = Line(float(d["a_ms"]) / 1e3, float(d["b_ms"]) / 1e3)
        for n, ms in (d.get("points_ms") or {}).items():
            curve._mean[int(n)], curve._count[int(n)] = float(ms) / 1e3, MIN_PASSES
        curve._line = curve._fit() if curve._mean else None
        return curve


def expected_service_s(ahead: int, workers: int, curve: LatencyCurve) -> float:
    """Seconds until a request arriving behind `ahead` accepted ones (`workers` equal workers, each passing at
    most curve.max_batch) has its result. The first `workers · max_batch` of them are taken to be in the passes
    now running (half done, on average); the rest queue in full passes before its own."""
    if workers < 1:
        return float("inf")
    full = workers * curve.max_batch
    running = min(ahead, full)
    residual = 0.5 * curve.predict(-(-running // workers)) if running else 0.0
    queued = ahead - running + 1  # its own included
    passes = -(-queued // full)
    own_batch = min(curve.max_batch, -(-(queued - (passes - 1) * full) // workers))  # its own pass's share
    return residual + (passes - 1) * curve.predict(curve.max_batch) + curve.predict(own_batch)
