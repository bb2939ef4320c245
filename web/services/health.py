"""Which stages are live, from the workers' heartbeats (one HGETALL per stage, never a SCAN).

A stage is live when at least one of its workers has a fresh heartbeat, says it is `ready` and proves it
still consumes (its watchdog's broker ping came back: workers/liveness.py):
  - one GPU stage per enabled model (`workers:<model>`, written by the GPU runtime);
  - `safety` (`stage:safety`, written by the safety workers' watchdog);
  - `reaper` (`stage:reaper`, written after each pass of ops/reaper.py).
A stage with no live worker makes the service `degraded`: jobs would wait out their deadlines there.
`stages()` is what a /health handler calls; it decides nothing about who may see the details.
"""
from __future__ import annotations

from typing import Any

from web.services import catalog
from workers.settings import Settings
from workers.wire import notify

NON_MODEL_STAGES = ("safety", "reaper")


def _live(beat: dict[str, Any]) -> bool:
    return beat.get("state") == "ready" and beat.get("consuming", True) is not False


def _summary(beats: list[dict[str, Any]]) -> dict[str, Any]:
    live = [b for b in beats if _live(b)]
    return {
        "live": bool(live),
        "workers": len(beats),
        "live_workers": len(live),
        "states": sorted({b.get("state", "unknown") for b in beats}),
        "errors": sorted({b["error"] for b in beats if b.get("error")}),
    }


def stages(settings: Settings) -> dict[str, dict[str, Any]]:
    """{"model:<name>": ..., "safety": ..., "reaper": ...}, each {live, workers, live_workers, states, errors}."""
    r = notify.client(settings.redis_url)
    out = {f"model:{name}": _summary(notify.read_heartbeats(r, name)) for name in catalog.enabled_models(settings)}
    for stage in NON_MODEL_STAGES:
        out[stage] = _summary(notify.read_heartbeats(r, stage, key=notify.stage_key(stage)))
    return out


def all_live(report: dict[str, dict[str, Any]]) -> bool:
    return all(s["live"] for s in report.values())
