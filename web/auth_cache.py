"""A short-lived, per-process memory of keys that just authenticated, so a control loop calling at its
control rate does not pay a database round trip (and three ORM rows) for its key on every request.

Bounded in time (AUTH_CACHE_S, 2 s by default; 0 turns it off) and in size. The cost, stated in the README:
a key revoked, expired by rotation or moved to another tier, or a customer disabled, takes effect within
AUTH_CACHE_S on each web process. Only a SHA-256 of the key is held, never the key.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, Any]] = OrderedDict()

    @staticmethod
    def _id(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def get(self, key: str) -> Any | None:
        if self.ttl_s <= 0:
            return None
        kid, now = self._id(key), time.monotonic()
        with self._lock:
            hit = self._entries.get(kid)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._entries[kid]
                return None
            return hit[1]

    def put(self, key: str, principal: Any, key_expires_at: datetime | None) -> None:
        if self.ttl_s <= 0:
            return
        until = time.monotonic() + self.ttl_s
        if key_expires_at is not None:  # never past the key's own expiry (a rotated key's grace ends on time)
            until = min(until, time.monotonic() + (key_expires_at.timestamp() - time.time()))
        with self._lock:
            self._entries[self._id(key)] = (until, principal)
            self._entries.move_to_end(self._id(key))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


_caches: dict[float, KeyCache] = {}
_lock = threading.Lock()


def for_ttl(ttl_s: float) -> KeyCache:
    """The process's cache for this TTL (one per setting, so tests with their own settings get their own)."""
    with _lock:
        cache = _caches.get(ttl_s)
        if cache is None:
            cache = _caches[ttl_s] = KeyCache(ttl_s)
        return cache
