"""JSON shape of a replay, with its progress."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import url_for

from web.services.public_errors import public_error
from web.services.render import iso
from workers.store.models import Replay


def progress(replay: Replay, now: datetime | None = None) -> dict[str, Any]:
    """Done/total, and a rate measured from the first slice's start (so queueing does not dilute it)."""
    done, total = replay.done_steps, replay.total_steps
    rate = eta = None
    if replay.started_at is not None and done:
        elapsed = ((replay.finished_at or now or datetime.now(UTC)) - replay.started_at).total_seconds()
        if elapsed > 0:
            rate = round(done / elapsed, 3)
            eta = 0.0 if replay.finished_at else round((total - done) / rate, 3)
    return {"done_steps": done, "total_steps": total, "fraction": round(done / total, 6) if total else 1.0,
            "steps_per_second": rate, "eta_seconds": eta}


def replay_json(replay: Replay) -> dict[str, Any]:
    rid = str(replay.id)
    return {
        "id": rid,
        "state": replay.state,
        "model": replay.model,
        "request_id": replay.request_id,
        "dataset": {k: v for k, v in replay.dataset.items() if k != "root"},
        "options": replay.options,
        "progress": progress(replay),
        "created_at": iso(replay.created_at),
        "started_at": iso(replay.started_at),
        "finished_at": iso(replay.finished_at),
        "summary": replay.summary,
        "error": public_error(replay.error),
        "links": {
            "self": url_for("replays.ReplayById", replay_id=rid),
            "results": url_for("replays.ReplayResults", replay_id=rid),
            "plot": url_for("replays.ReplayPlot", replay_id=rid),
        },
    }
