"""Per-customer cap on jobs in flight, as leases in a Redis sorted set.

Each member is a job id scored by its lease expiry (ms, Redis clock). A worker that crashes never
calls ``release``, so its lease simply runs out and the slot frees itself; long jobs ``touch`` to
extend. Acquire, touch and count run as one Lua script, so the cap is exact under concurrency.
"""

from __future__ import annotations

from typing import Any

import redis

from .limiter import customer_key
from .scripts import INFLIGHT_LUA


def _now_ms(now: float | None) -> str:
    return "" if now is None else str(round(now * 1000))


def _ttl_ms(ttl_s: float) -> int:
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive: a lease that never expires defeats the point")
    return max(1, round(ttl_s * 1000))


class InFlight:
    """Concurrency cap per customer; ``cap`` None or <= 0 means unlimited (still counted)."""

    def __init__(self, redis_client: redis.Redis, key_prefix: str = "inflight") -> None:
        self._redis = redis_client
        self._prefix = key_prefix
        self._script = redis_client.register_script(INFLIGHT_LUA)

    def key(self, customer_id: str) -> str:
        return customer_key(self._prefix, customer_id)

    def acquire(
        self,
        customer_id: str,
        job_id: str,
        cap: int | None,
        ttl_s: float,
        now: float | None = None,
    ) -> bool:
        """Take a slot for ``job_id``; True if it holds one (re-acquiring renews, idempotent)."""
        args = ["acquire", job_id, cap or 0, _ttl_ms(ttl_s), _now_ms(now)]
        ok, _ = self._script(keys=[self.key(customer_id)], args=args)
        return bool(ok)

    def touch(
        self, customer_id: str, job_id: str, ttl_s: float, now: float | None = None
    ) -> bool:
        """Extend a held lease; False if it had already expired or was released."""
        args = ["touch", job_id, 0, _ttl_ms(ttl_s), _now_ms(now)]
        ok, _ = self._script(keys=[self.key(customer_id)], args=args)
        return bool(ok)

    def release(self, customer_id: str, job_id: str) -> bool:
        """Free the slot; False if the job held none (already released or expired)."""
        return bool(self._redis.zrem(self.key(customer_id), job_id))

    def count(self, customer_id: str, now: float | None = None) -> int:
        """Live (unexpired) leases; read-only."""
        _, n = self._script(keys=[self.key(customer_id)], args=["count", "", 0, 0, _now_ms(now)])
        return int(n)

    def queue_count(self, pipe: Any, customer_id: str, now: float | None = None) -> None:
        """`count` added to a pipeline (round_trip.one_round_trip); its reply's second item is the count."""
        pipe.evalsha(self._script.sha, 1, self.key(customer_id), "count", "", 0, 0, _now_ms(now))
