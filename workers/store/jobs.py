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

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from workers.store.models import TERMINAL_STATES, Job, UsageRecord

ACTIVE = ("queued", "running")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Claim:
    """What a worker learns when it picks a job up."""

    state: str  # "run", or the terminal state that makes the task a no-op
    deadline_at: datetime | None = None


def claim_for_inference(session: Session, job_id: str) -> Claim:
    """Mark the job running (again, on redelivery) unless it is finished, canceled or past its deadline.

    The common case is one conditional UPDATE (one round trip on the hot path); only a job that cannot
    run is read back to learn why.
    """
    jid = uuid.UUID(job_id)
    row = session.execute(
        update(Job).where(Job.id == jid, Job.state.in_(ACTIVE), Job.deadline_at > func.now())
        .values(state="running", started_at=func.coalesce(Job.started_at, func.now()), attempts=Job.attempts + 1)
        .returning(Job.deadline_at)
    ).first()
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
           error: dict[str, Any] | None = None, timings: StageTimings | None = None) -> bool:
    """Move an active job to a terminal state and record its usage, once. False if it was already final."""
    job = session.execute(select(Job).where(Job.id == uuid.UUID(job_id)).with_for_update()).scalar_one_or_none()
    if job is None or job.state in TERMINAL_STATES:
        return False
    if timings is not None:
        timings.apply(job)
    _finish(session, job, state, result=result, error=error)
    return True


@dataclass
class StageTimings:
    """What the stages measured on their own clocks; written with the final state in one transaction."""

    inference_ms: float | None = None
    inference_done_at: float | None = None  # epoch seconds
    safety_check_ms: float | None = None

    def apply(self, job: Job) -> None:
        job.inference_ms = self.inference_ms
        job.safety_check_ms = self.safety_check_ms
        if self.inference_done_at is not None:
            job.inference_done_at = job.safety_started_at = datetime.fromtimestamp(self.inference_done_at, UTC)


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
    job.state = state
    job.finished_at = now()
    job.result = result
    job.error = error
    timings = latencies(job)
    safety = (result or {}).get("safety") or {}
    session.execute(insert(UsageRecord).values(
        job_id=job.id, customer_id=job.customer_id, model=job.model, kind=job.kind, final_state=state,
        queue_wait_ms=timings["queue_wait_ms"], inference_ms=timings["inference_ms"],
        safety_check_ms=timings["safety_check_ms"], total_latency_ms=timings["total_latency_ms"],
        safety_modified=safety.get("decision") == "modified", safety_rejected=safety.get("decision") == "rejected",
        detail=(error or {}).get("code"),
    ).on_conflict_do_nothing(index_elements=["job_id"]))


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
