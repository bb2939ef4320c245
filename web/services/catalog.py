"""Enabled models and what their workers report about themselves (from the Redis heartbeats)."""
from __future__ import annotations

import difflib
from typing import Any

from web.errors import ApiError
from workers import notify
from workers.routing import infer_queue
from workers.settings import Settings


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


def workers_for(settings: Settings, name: str) -> list[dict[str, Any]]:
    return notify.read_heartbeats(notify.client(settings.redis_url), name)


def describe(settings: Settings, name: str) -> dict[str, Any]:
    beats = workers_for(settings, name)
    ready = [b for b in beats if b.get("state") == "ready"]
    spec = next((b["spec"] for b in ready if "spec" in b), None)
    return {
        "name": name,
        "queue": infer_queue(name),
        "workers": len(beats),
        "ready_workers": len(ready),
        "ready": bool(ready),
        "states": sorted({b.get("state", "unknown") for b in beats}),
        "spec": spec,
        "errors": [b["error"] for b in beats if b.get("error")],
    }


def spec_of(settings: Settings, name: str) -> dict[str, Any] | None:
    for beat in workers_for(settings, name):
        if beat.get("state") == "ready" and "spec" in beat:
            return beat["spec"]
    return None
