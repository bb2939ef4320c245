"""Enabled models and what their workers report about themselves (from the Redis heartbeats)."""
from __future__ import annotations

import difflib
import threading
import time
from typing import Any

from web.errors import ApiError
from workers.settings import Settings
from workers.wire import notify
from workers.wire.queues import infer_queue


def enabled_models(settings: Settings) -> list[str]:
    # The names only; paths matter to the GPU workers (workers/policies/registry.py), not to the web.
    names = [item.split("=", 1)[0].strip() for item in settings.enabled_models.split(",")]
    return [n for n in names if n]


def require_model(settings: Settings, name: str) -> None:
    models = enabled_models(settings)
    if name not in models:
        close = difflib.get_close_matches(name, models, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ApiError(422, "unknown_model", f"model {name!r} is not served here{hint} (enabled: {', '.join(models)})",
                       field="model")


class _HeartbeatCache:
    """Heartbeats per model, reused for HEARTBEAT_CACHE_S: a submission needs the model's spec, and workers
    only change it when they (re)load, so reading Redis on every request buys nothing."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}

    def get(self, settings: Settings, name: str) -> list[dict[str, Any]]:
        key, now = (settings.redis_url, name), time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit and now - hit[0] < self.ttl_s:
            return hit[1]
        beats = notify.read_heartbeats(notify.client(settings.redis_url), name)
        with self._lock:
            self._entries[key] = (now, beats)
        return beats


HEARTBEAT_CACHE_S = 1.0
_beats = _HeartbeatCache(HEARTBEAT_CACHE_S)


def workers_for(settings: Settings, name: str, *, fresh: bool = False) -> list[dict[str, Any]]:
    if fresh:  # /health and /v1/models/list report the live state
        return notify.read_heartbeats(notify.client(settings.redis_url), name)
    return _beats.get(settings, name)


def describe(settings: Settings, name: str) -> dict[str, Any]:
    beats = workers_for(settings, name, fresh=True)
    # A worker that cannot consume (its watchdog's ping goes unanswered) serves nobody, whatever its model says.
    ready = [b for b in beats if b.get("state") == "ready" and b.get("consuming", True) is not False]
    spec = next((b["spec"] for b in ready if "spec" in b), None)
    return {
        "name": name,
        "queue": infer_queue(name),
        "workers": len(beats),
        "ready_workers": len(ready),
        "ready": bool(ready),
        "states": sorted({b.get("state", "unknown") for b in beats}),
        "spec": spec,
        "simulated": bool(spec and spec.get("simulated")),  # the sim backend: no model behind its actions
        "errors": [b["error"] for b in beats if b.get("error")],
    }


def spec_of(settings: Settings, name: str) -> dict[str, Any] | None:
    for beat in workers_for(settings, name):
        if beat.get("state") == "ready" and "spec" in beat:
            return beat["spec"]
    return None
