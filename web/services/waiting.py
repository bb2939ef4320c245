"""Blocking wait on a job: BLPOP on its Redis token, then the job as its row now stands (design.md, "Waiting"):
from the token when a worker's token carries the settled columns (written after its commit), else read from
PostgreSQL."""
from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import bindparam, inspect, select

from web import db
from web.services import admission
from workers.store import jobs as jobstore
from workers.store.models import TERMINAL_STATES, Job
from workers.wire import notify


def wait_for(job: Job, timeout_s: float) -> Job:
    """Return the job once it is final or `timeout_s` has passed, whichever comes first.

    A job still unfinished at its deadline is expired here and now: a control loop must hear "no action"
    at its deadline, not whenever a busy worker gets round to the message.
    """
    settings = current_app.config["SETTINGS"]
    r = notify.client(settings.redis_url)
    now = time.monotonic()
    deadline = now + (job.deadline_at - datetime.now(UTC)).total_seconds()
    end = min(now + min(timeout_s, settings.wait_max_s), deadline)
    s = db.session()
    while job.state not in TERMINAL_STATES:
        s.commit()  # hand the connection back to the pool while we block
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        # Wake at least every 5 s to re-read the row, so a token lost with a Redis restart costs
        # latency, never correctness.
        token = notify.wait_done(r, str(job.id), min(remaining, notify.MAX_BLOCK_S))
        settled = notify.outcome(token)
        job = _settled(job, settled) if settled is not None and not inspect(job).persistent else _read(s, job.id)
    if job.state not in TERMINAL_STATES and time.monotonic() >= deadline:
        job = _expire(s, job)
    return job


# The row as it stands, as a Job outside the session: one plain SELECT by primary key, without the ORM's
# identity-map bookkeeping (a control loop pays this read on every request).
_READ = select(Job.__table__).where(Job.__table__.c.id == bindparam("id"))


def _read(s, job_id) -> Job:
    return Job(**s.execute(_READ, {"id": job_id}).mappings().one())


_SETTLED_TIMES = ("finished_at", "started_at", "inference_done_at", "safety_started_at")


def _settled(job: Job, outcome: dict) -> Job:
    """A detached job with the columns the worker's transition settled: the committed row, without reading it
    (a job loaded in this session, as GET /wait has, is read instead so the session never sees it dirty)."""
    values = {c.key: getattr(job, c.key) for c in Job.__table__.columns}
    values.update({k: v for k, v in outcome.items() if k in values})
    for k in _SETTLED_TIMES:
        if values.get(k) is not None:
            values[k] = datetime.fromisoformat(values[k])
    return Job(**values)


def _expire(s, job: Job) -> Job:
    locked = s.get(Job, job.id, with_for_update=True, populate_existing=True)
    expired = jobstore.expire(s, locked)
    s.commit()
    if expired:
        admission.ended(job, "expired")
    return _read(s, job.id)
