"""Per-customer minute/day/month limits, checked and consumed in one atomic Redis call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis

from .decision import DAY, MINUTE, MONTH, Decision, Limits, Window
from .scripts import LIMITS_LUA

_BITS = ((1, MINUTE), (2, DAY), (4, MONTH))
_US = 1_000_000


def customer_key(prefix: str, customer_id: str) -> str:
    """``<prefix>:{<customer>}``: the hash tag keeps a customer's keys in one cluster slot."""
    if not customer_id or not isinstance(customer_id, str):
        raise ValueError("customer_id must be a non-empty string")
    return f"{prefix}:{{{customer_id}}}"


def _now_arg(now: float | None) -> str:
    # '' makes the script read Redis TIME, so all web processes share one clock.
    return "" if now is None else str(round(now * _US))


def _window(name: str, limit: int | None, remaining: int, reset_us: int, used: int) -> Window:
    return Window(
        name=name,
        limit=limit or None,
        used=int(used),
        remaining=None if remaining < 0 else int(remaining),
        reset_s=reset_us / _US,
    )


def decode(raw: Sequence[int], limits: Limits) -> Decision:
    """Turn the script's flat integer reply into a :class:`Decision`."""
    allowed, mask, binding, wait_us = (int(v) for v in raw[:4])
    minute = _window(MINUTE, limits.per_minute, *raw[4:7])
    day = _window(DAY, limits.per_day, *raw[7:10])
    month = _window(MONTH, limits.per_month, *raw[10:13])
    retry_after = None if allowed else (math.inf if wait_us < 0 else wait_us / _US)
    return Decision(
        allowed=bool(allowed),
        refused=tuple(name for bit, name in _BITS if mask & bit),
        refused_by=next((name for bit, name in _BITS if binding == bit), None),
        retry_after=retry_after,
        minute=minute,
        day=day,
        month=month,
        window_ids=(int(raw[13]), int(raw[14]), int(raw[15])),
    )


class RateLimiter:
    """Enforces :class:`Limits` per customer; safe to share between threads.

    The Lua script is registered once per instance (``register_script`` sends EVALSHA and falls
    back to EVAL after a Redis restart flushed the script cache).
    """

    def __init__(self, redis_client: redis.Redis, key_prefix: str = "rl") -> None:
        self._redis = redis_client
        self._prefix = key_prefix
        self._script = redis_client.register_script(LIMITS_LUA)

    def key(self, customer_id: str) -> str:
        return customer_key(self._prefix, customer_id)

    def hit(
        self, customer_id: str, limits: Limits, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Admit and count ``cost`` units if every limit allows it; otherwise count nothing."""
        return self._call("hit", customer_id, limits, cost, now)

    def peek(self, customer_id: str, limits: Limits, now: float | None = None) -> Decision:
        """Current usage, and whether one more unit would be admitted; consumes nothing."""
        return self._call("peek", customer_id, limits, 1, now)

    def queue(self, pipe: Any, mode: str, customer_id: str, limits: Limits, cost: int = 1,
              now: float | None = None) -> None:
        """Add this call ("hit" or "peek") to a pipeline (round_trip.one_round_trip); `decode` reads its reply."""
        pipe.evalsha(self._script.sha, 1, self.key(customer_id), *self._args(mode, limits, cost, now))

    def refund(
        self,
        customer_id: str,
        limits: Limits,
        cost: int = 1,
        now: float | None = None,
        decision: Decision | None = None,
    ) -> Decision:
        """Give back units of an admitted request that was refused later (e.g. queue full).

        Pass the admitting ``decision`` so a unit is returned only to the day/month it was charged
        to; without it the current windows are credited. Only refund what ``hit`` admitted.
        """
        ids = ("", "", "") if decision is None else tuple(str(i) for i in decision.window_ids)
        return self._call("refund", customer_id, limits, cost, now, ids)

    def _call(
        self,
        mode: str,
        customer_id: str,
        limits: Limits,
        cost: int,
        now: float | None,
        window_ids: Sequence[str] = ("", "", ""),
    ) -> Decision:
        raw = self._script(keys=[self.key(customer_id)], args=self._args(mode, limits, cost, now, window_ids))
        return decode(raw, limits)

    @staticmethod
    def _args(mode: str, limits: Limits, cost: int, now: float | None,
              window_ids: Sequence[str] = ("", "", "")) -> list[Any]:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost must be a positive int, not {cost!r}")
        return [mode, cost, _now_arg(now), *limits.as_args(), *window_ids]
