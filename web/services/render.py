"""JSON shapes of a job and of the specification's synchronous inference response."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from web.services.public_errors import public_error
from workers.store.jobs import latencies
from workers.store.models import Job


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def job_json(job: Job) -> dict[str, Any]:
    jid = str(job.id)
    return {
        "id": jid,
        "state": job.state,
        "model": job.model,
        "kind": job.kind,
        "request_id": job.request_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "deadline_at": iso(job.deadline_at),
        "attempts": job.attempts,
        "request": job.request,
        "result": job.result,
        "error": public_error(job.error),
        "performance": latencies(job),
        "links": {
            "self": url_for("jobs.JobById", job_id=jid),
            "wait": url_for("jobs.JobWait", job_id=jid),
        },
    }


def inference_json(job: Job, usage: dict[str, Any] | None) -> dict[str, Any]:
    """The specification's response: request_id, timestamp, model, action, safety, performance, usage."""
    result = job.result or {}
    action = dict(result.get("action") or {})
    return {
        "request_id": job.request_id,
        "job_id": str(job.id),
        "timestamp": iso(job.finished_at),
        "model": job.model,
        "action": action,
        "safety": result.get("safety"),
        "performance": {**latencies(job), "model_timings_ms": result.get("model_timings_ms")},
        "usage": usage,
    }
