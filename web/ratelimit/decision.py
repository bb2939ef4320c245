"""Limits in, decisions out: the plain values the limiter returns and how they are shown.

Window semantics (see also ``scripts.py``):

* minute: a token bucket holding ``per_minute`` tokens that refills at ``per_minute`` per 60 s.
  A burst of exactly ``per_minute`` is admitted, then one request per ``60/per_minute`` s; in the
  worst case a client gets ``2*per_minute - 1`` in a sliding 60 s, the usual token-bucket bound.
  ``reset_s`` is the time until the bucket is full again.
* day and month: calendar windows in UTC (midnight, the 1st). They match what a customer reads on
  an invoice and in the usage block ("requests today", "this month"); a rolling 30-day window
  would refuse on the 1st because of last month's traffic. ``reset_s`` is the time to the next
  UTC midnight / first of the month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MINUTE, DAY, MONTH = "minute", "day", "month"
# Nominal window lengths for RateLimit-Policy ``w``; the month's real end is carried by ``t``.
WINDOW_SECONDS = {MINUTE: 60, DAY: 86_400, MONTH: 2_592_000}
# Above one token per 60 us the bucket's float arithmetic stops being worth trusting.
MAX_PER_MINUTE = 1_000_000


def _check_limit(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int or None, not {value!r}")


@dataclass(frozen=True)
class Limits:
    """Per-customer limits; None or 0 means unlimited (usage is still counted)."""

    per_minute: int | None = None
    per_day: int | None = None
    per_month: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_minute", "per_day", "per_month"):
            _check_limit(name, getattr(self, name))
        if (self.per_minute or 0) > MAX_PER_MINUTE:
            raise ValueError(f"per_minute above {MAX_PER_MINUTE} is not supported")

    def as_args(self) -> list[int]:
        return [self.per_minute or 0, self.per_day or 0, self.per_month or 0]


@dataclass(frozen=True)
class Window:
    """One limit's state after the call."""

    name: str
    limit: int | None  # None = unlimited
    used: int  # units admitted in the current calendar minute/day/month (UTC)
    remaining: int | None  # None = unlimited
    reset_s: float  # seconds until the full quota is available again

    @property
    def window_s(self) -> int:
        return WINDOW_SECONDS[self.name]


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit/peek/refund."""

    allowed: bool
    refused: tuple[str, ...]  # every limit that refused, in minute/day/month order
    refused_by: str | None  # the binding one: the limit with the longest wait
    retry_after: float | None  # seconds; None when allowed, math.inf when it can never pass
    minute: Window
    day: Window
    month: Window
    # Window ids charged (minute, day since epoch, YYYYMM); refund() uses them to give a unit
    # back only to the window that took it.
    window_ids: tuple[int, int, int] = field(default=(0, 0, 0))

    @property
    def windows(self) -> tuple[Window, Window, Window]:
        return (self.minute, self.day, self.month)

    def closest_to_exhaustion(self) -> Window | None:
        """The limited window to report in ``RateLimit``: the refusing one, else fewest left.

        Ties go to the window that resets later, since it is the one that will bind longer.
        """
        if self.refused_by is not None:
            return next(w for w in self.windows if w.name == self.refused_by)
        limited = [w for w in self.windows if w.limit]
        if not limited:
            return None
        return min(limited, key=lambda w: (w.remaining, -w.reset_s))

    def headers(self) -> dict[str, str]:
        """IETF draft-ietf-httpapi-ratelimit-headers fields, plus Retry-After when refused."""
        out: dict[str, str] = {}
        limited = [w for w in self.windows if w.limit]
        if limited:
            out["RateLimit-Policy"] = ", ".join(
                f'"{w.name}";q={w.limit};w={w.window_s}' for w in limited
            )
            top = self.closest_to_exhaustion()
            assert top is not None
            out["RateLimit"] = f'"{top.name}";r={top.remaining};t={math.ceil(top.reset_s)}'
        if not self.allowed and self.retry_after is not None and math.isfinite(self.retry_after):
            # RFC 9110 delay-seconds is a non-negative integer; round up so a retry is not early.
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out

    def usage_block(self, tier: str | None = None) -> dict[str, Any]:
        """The product's usage block for responses and GET /v1/usage."""
        return {
            "tier": tier,
            "requests_this_minute": self.minute.used,
            "requests_today": self.day.used,
            "requests_this_month": self.month.used,
            "remaining_minute": self.minute.remaining,
            "remaining_day": self.day.remaining,
            "remaining_month": self.month.remaining,
        }
