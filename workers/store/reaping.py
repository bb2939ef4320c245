"""What the reaper (ops/reaper.py) reads and writes in PostgreSQL: rows whose message or worker is gone.

Every query locks its rows `FOR UPDATE SKIP LOCKED`, so two reapers (or a reaper and a worker finishing the
same job) never act on one row twice: the second skips what the first holds, and finds it terminal after.
Jobs end through the same transition as a worker's (jobs._finish: terminal state plus one usage row, ON
CONFLICT DO NOTHING), so usage is recorded once whoever ends the job.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from workers.store import jobs as jobstore
from workers.store.models import REPLAY_TERMINAL, TERMINAL_STATES, Job, Replay
from workers.wire.errors import JobError

BATCH = 200  # rows per statement: a backlog is worked off over a few passes, never in one huge transaction


@dataclass(frozen=True)
class Ended:
    """A row the reaper ended: enough to wake its waiters and free its customer's in-flight slot."""

    id: str
    customer_id: str
    state: str


def expire_lost_jobs(session: Session, grace_s: float, limit: int = BATCH) -> list[Ended]:
    """End `expired` (code "lost") every active job past its deadline plus `grace_s`.

    A live worker ends a job at its deadline itself (its claim or its batcher checks it), so a job still
    active `grace_s` later has lost its message or its worker. Its images were never stored (the row keeps
    hashes), so it cannot be re-published: it ends here and its waiters learn so at once.
    """
    rows = session.execute(
        select(Job).where(Job.state.in_(jobstore.ACTIVE),
                          Job.deadline_at < func.now() - timedelta(seconds=grace_s))
        .order_by(Job.deadline_at).limit(limit).with_for_update(skip_locked=True)
    ).scalars().all()
    return [end_lost(session, job) for job in rows]


def claimed_by(session: Session, worker: str, limit: int = BATCH) -> list[Job]:
    """The running jobs a (dead) GPU worker claimed, locked for the caller to re-queue or end."""
    return list(session.execute(
        select(Job).where(Job.state == "running", Job.worker == worker)
        .order_by(Job.deadline_at).limit(limit).with_for_update(skip_locked=True)
    ).scalars().all())


def claiming_workers(session: Session) -> set[tuple[str, str]]:
    """(worker, model) for every worker named by a running job: the reaper releases those with no live
    heartbeat."""
    rows = session.execute(select(Job.worker, Job.model).where(Job.state == "running", Job.worker.is_not(None))
                           .distinct())
    return {(w, m) for w, m in rows}


def requeue(session: Session, job: Job) -> None:
    """Back to `queued`, unowned: its message was published again and its next claim runs it."""
    job.state, job.worker = "queued", None


def end_lost(session: Session, job: Job) -> Ended:
    """End a job whose worker or message is gone and cannot be replaced (code "lost"), usage once."""
    jobstore._finish(session, job, "expired", error=JobError("lost").to_dict())
    return Ended(str(job.id), str(job.customer_id), "expired")


def recently_queued(session: Session, model: str, within_s: float, limit: int = BATCH) -> list[str]:
    """`model`'s jobs still `queued`, accepted within the last `within_s` and before their deadline: the ones
    a GPU worker that just died may have taken from the queue without claiming (ops/reaper.py)."""
    rows = session.execute(
        select(Job.id).where(Job.state == "queued", Job.model == model,
                             Job.created_at > func.now() - timedelta(seconds=within_s), Job.deadline_at > func.now())
        .order_by(Job.created_at).limit(limit)
    ).scalars().all()
    return [str(r) for r in rows]


def unclaimed_jobs(session: Session, after_s: float, limit: int = BATCH) -> list[str]:
    """Jobs still `queued` `after_s` after they were accepted and before their deadline: their message may
    never have reached the broker, or the broker lost it (ops/reaper.py re-publishes them, at most once)."""
    rows = session.execute(
        select(Job.id).where(Job.state == "queued", Job.created_at < func.now() - timedelta(seconds=after_s),
                             Job.deadline_at > func.now())
        .order_by(Job.created_at).limit(limit)
    ).scalars().all()
    return [str(r) for r in rows]


def stalled_replays(session: Session, stall_s: float, limit: int = BATCH) -> list[dict[str, Any]]:
    """Active replays whose current slice nobody has touched for `stall_s`: the slice message to publish again.

    "Touched" is the last hand-on (handed_at), else the first claim (started_at), else creation. A running
    slice hands on within one slice length, so a row older than a few of them has lost its message (a worker
    acked it and died, or Redis lost it). The row is stamped as touched, so the next pass waits its turn
    again; a duplicate of the current slice is harmless (replays.claim_slice: same seq, same stored rows).
    """
    touched = func.coalesce(Replay.handed_at, Replay.started_at, Replay.created_at)
    rows = session.execute(
        select(Replay).where(Replay.state.in_(("queued", "running")),
                             touched < func.now() - timedelta(seconds=stall_s))
        .order_by(touched).limit(limit).with_for_update(skip_locked=True)
    ).scalars().all()
    msgs = []
    for replay in rows:
        replay.handed_at = jobstore.now()
        msgs.append({"replay_id": str(replay.id), "model": replay.model, "seq": replay.slice_seq,
                     "request_id": replay.request_id, "customer_id": str(replay.customer_id),
                     "dataset": dict(replay.dataset)})
    return msgs


def referenced_uploads(session: Session) -> set[str]:
    """The upload folders (first part of dataset.path) that an active replay still reads."""
    rows = session.execute(select(Replay.dataset["path"].astext).where(
        Replay.state.not_in(tuple(REPLAY_TERMINAL)), Replay.dataset["root"].astext == "upload"))
    return {p.split("/", 1)[0] for (p,) in rows if p}


def ended_among(session: Session, ids: list[str]) -> set[str]:
    """Which of these job or replay ids belong to rows that have ended (their in-flight leases are stale).

    An id with no row at all is left alone: the web takes the lease just before it commits the row.
    """
    uuids = [uuid.UUID(i) for i in ids if _is_uuid(i)]
    if not uuids:
        return set()
    done = session.execute(select(Job.id).where(Job.id.in_(uuids), Job.state.in_(tuple(TERMINAL_STATES)))).scalars()
    out = {str(i) for i in done}
    done = session.execute(select(Replay.id).where(Replay.id.in_(uuids),
                                                   Replay.state.in_(tuple(REPLAY_TERMINAL)))).scalars()
    return out | {str(i) for i in done}


def customer_ids(session: Session, with_active_since_s: float) -> list[str]:
    """Customers with a job or replay created recently: the only ones whose lease sets can hold anything."""
    since = func.now() - timedelta(seconds=with_active_since_s)
    jobs = select(Job.customer_id).where(Job.created_at > since)
    replays = select(Replay.customer_id).where(or_(Replay.created_at > since, Replay.finished_at > since,
                                                   Replay.state.in_(("queued", "running"))))
    return sorted({str(c) for c in session.execute(jobs.union(replays)).scalars()})


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False
