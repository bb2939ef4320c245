"""Job state transitions in PostgreSQL. Each is one conditional UPDATE, so a redelivered task, a cancel
racing a worker, or two workers holding the same message can never finish a job twice.

queued -> running -> succeeded | failed        (the worker)
queued | running -> canceled                  (the client)
queued | running -> expired                   (the worker, when the deadline has passed)
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, String, bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Session

from workers.store.models import TERMINAL_STATES, Job, UsageRecord

ACTIVE = ("queued", "running")
_ACTIVE_SQL = ", ".join(f"'{a}'" for a in ACTIVE)
_JOBS, _USAGE = Job.__tablename__, UsageRecord.__tablename__

# The two statements on every job's path, written once as SQL: built per call with the ORM, their Python side
# (coercion, cache keys, session synchronisation) cost a GPU worker more CPU than the rest of the claim.
_CLAIM = text(f"""
    UPDATE {_JOBS} SET state = 'running', started_at = coalesce(started_at, now()), attempts = attempts + 1,
        worker = :worker
    WHERE id = :id AND state IN ({_ACTIVE_SQL}) AND deadline_at > now()
    RETURNING deadline_at
""").bindparams(bindparam("id", type_=UUID(as_uuid=True)), bindparam("worker", type_=String)).columns(
    deadline_at=DateTime(timezone=True))

_MS = "round(extract(epoch from {b} - {a})::numeric * 1000, 3)::float8"  # the same figure as `latencies`
_END = text(f"""
    WITH ended AS (
        UPDATE {_JOBS} SET state = :state, finished_at = :finished_at, result = :result, error = :error,
            inference_ms = CASE WHEN :timed THEN :inference_ms ELSE inference_ms END,
            safety_check_ms = CASE WHEN :timed THEN :safety_check_ms ELSE safety_check_ms END,
            inference_done_at = coalesce(:inference_done_at, inference_done_at),
            safety_started_at = coalesce(:inference_done_at, safety_started_at)
        WHERE id = :id AND state IN ({_ACTIVE_SQL})
        RETURNING id, customer_id, model, kind, created_at, started_at, finished_at, inference_ms, safety_check_ms,
                  attempts, inference_done_at, safety_started_at
    ), usage AS (
        INSERT INTO {_USAGE} (job_id, customer_id, model, kind, final_state, queue_wait_ms, inference_ms,
                              safety_check_ms, total_latency_ms, safety_modified, safety_rejected, detail)
        SELECT id, customer_id, model, kind, :state, {_MS.format(a="created_at", b="started_at")}, inference_ms,
               safety_check_ms, {_MS.format(a="created_at", b="finished_at")}, :modified, :rejected, :detail
        FROM ended
        ON CONFLICT (job_id) DO NOTHING
    )
    SELECT started_at, attempts, inference_ms, safety_check_ms, inference_done_at, safety_started_at FROM ended
""").bindparams(
    bindparam("id", type_=UUID(as_uuid=True)), bindparam("state", type_=String),
    bindparam("finished_at", type_=DateTime(timezone=True)),
    bindparam("inference_done_at", type_=DateTime(timezone=True)),
    bindparam("result", type_=JSONB(none_as_null=True)), bindparam("error", type_=JSONB(none_as_null=True)),
    bindparam("timed", type_=Boolean), bindparam("inference_ms", type_=Float),
    bindparam("safety_check_ms", type_=Float),
    bindparam("modified", type_=Boolean), bindparam("rejected", type_=Boolean), bindparam("detail", type_=String),
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Claim:
    """What a worker learns when it picks a job up."""

    state: str  # "run", or the terminal state that makes the task a no-op
    deadline_at: datetime | None = None


def claim_for_inference(session: Session, job_id: str, worker: str | None = None) -> Claim:
    """Mark the job running (again, on redelivery) by `worker` unless it is finished, canceled or past its
    deadline.

    The common case is one conditional UPDATE (one round trip on the hot path); only a job that cannot
    run is read back to learn why.
    """
    jid = uuid.UUID(job_id)
    row = session.execute(_CLAIM, {"id": jid, "worker": worker}).first()
    if row is not None:
        return Claim("run", row.deadline_at)
    job = session.execute(select(Job).where(Job.id == jid).with_for_update()).scalar_one_or_none()
    if job is None:
        return Claim("missing")
    if job.state in TERMINAL_STATES:
        return Claim(job.state)
    _finish(session, job, "expired", error={"code": "deadline_exceeded",
                                            "detail": "the deadline passed before a worker could run the job"})
    return Claim("expired")


def finish(session: Session, job_id: str, state: str, *, result: dict[str, Any] | None = None,
           error: dict[str, Any] | None = None, timings: StageTimings | None = None) -> dict[str, Any] | None:
    """Move an active job to a terminal state and record its usage, once. None if it was already final; else
    the row's columns this transition settled (state, result, error, timestamps, timings, attempts), as
    JSON-ready values, so waiters can be told the outcome without reading the row back."""
    return _end(session, uuid.UUID(job_id), state, result=result, error=error, timings=timings)


@dataclass
class StageTimings:
    """What the stages measured on their own clocks; written with the final state in one transaction."""

    inference_ms: float | None = None
    inference_done_at: float | None = None  # epoch seconds
    safety_check_ms: float | None = None


def expire(session: Session, job: Job) -> bool:
    """Expire an active job whose deadline has passed (called by the web when a waiter reaches it)."""
    if job.state in TERMINAL_STATES or job.deadline_at > now():
        return False
    _finish(session, job, "expired", error={"code": "deadline_exceeded",
                                            "detail": "the deadline passed before the job finished"})
    return True


def cancel(session: Session, job: Job) -> bool:
    if job.state in TERMINAL_STATES:
        return False
    _finish(session, job, "canceled", error={"code": "canceled", "detail": "canceled by the client"})
    return True


def _finish(session: Session, job: Job, state: str, *, result: dict[str, Any] | None = None,
            error: dict[str, Any] | None = None) -> None:
    """End a job the caller has locked and loaded; its attributes reload on next access."""
    _end(session, job.id, state, result=result, error=error)
    session.expire(job)


def _end(session: Session, job_id: uuid.UUID, state: str, *, result: dict[str, Any] | None = None,
         error: dict[str, Any] | None = None, timings: StageTimings | None = None) -> dict[str, Any] | None:
    """The one statement that ends a job (_END): a conditional UPDATE to `state` and, from the row it returns,
    the usage record (unique per job, so it is written once) with the latencies computed by PostgreSQL from
    the row's own timestamps. One round trip, where reading the row, updating it and inserting the usage took
    three on every job's path. None if the job had already ended; else what `finish` returns."""
    decision = ((result or {}).get("safety") or {}).get("decision")
    params: dict[str, Any] = {
        "id": job_id, "state": state, "finished_at": now(), "result": result, "error": error,
        "modified": decision == "modified", "rejected": decision == "rejected", "detail": (error or {}).get("code"),
        "timed": timings is not None, "inference_ms": None, "safety_check_ms": None, "inference_done_at": None,
    }
    if timings is not None:
        params.update(inference_ms=timings.inference_ms, safety_check_ms=timings.safety_check_ms)
        if timings.inference_done_at is not None:
            params["inference_done_at"] = datetime.fromtimestamp(timings.inference_done_at, UTC)
    row = session.execute(_END, params).first()
    if row is None:
        return None
    return {"state": state, "result": result, "error": error, "finished_at": _iso(params["finished_at"]),
            "started_at": _iso(row.started_at), "inference_done_at": _iso(row.inference_done_at),
            "safety_started_at": _iso(row.safety_started_at), "attempts": row.attempts,
            "inference_ms": row.inference_ms, "safety_check_ms": row.safety_check_ms}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _ms(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds() * 1000.0, 3)


def latencies(job: Job) -> dict[str, float | None]:
    """Per-stage latencies from the job's timestamps (inference and safety use the workers' own clocks)."""
    return {
        "queue_wait_ms": _ms(job.created_at, job.started_at),
        "inference_ms": job.inference_ms,
        "safety_check_ms": job.safety_check_ms,
        "total_latency_ms": _ms(job.created_at, job.finished_at),
    }
