"""A short-lived copy of each job's message, so the reaper can publish it again when it never reached the
broker (the web died between its commit and its publish) or the broker lost it.

Job rows keep images by hash only, on purpose; this copy is the one place a job's images wait outside the
broker, and only for COPY_TTL_S: long enough for the reaper (every 2 s) to notice a job still `queued`
REPUBLISH_AFTER_S after it was accepted, short enough that the copies of a busy minute fit in Redis; or until
the job's deadline, if later, so a job whose GPU worker died holding it can be re-published. `take`
is a GETDEL, so each job is re-published at most once, however many reapers run. A duplicate of a message
that was only slow is harmless: the second copy's claim finds the job taken and does nothing.
"""
from __future__ import annotations

import json
import time
from typing import Any

import redis

REPUBLISH_AFTER_S = 5.0
COPY_TTL_S = REPUBLISH_AFTER_S + 10.0


def key(job_id: str) -> str:
    return f"job:{job_id}:msg"


def keep(r: redis.Redis, job_id: str, payload: dict[str, Any], safety_job: dict[str, Any]) -> None:
    # Kept until the deadline too (at least COPY_TTL_S): a GPU worker that dies holding the job has it
    # re-published by the reaper (ops/reaper.py release_worker) while its deadline still allows.
    ttl_s = max(COPY_TTL_S, float(payload.get("deadline", 0)) - time.time() + 1.0)
    r.set(key(job_id), json.dumps([payload, safety_job], separators=(",", ":")), px=int(ttl_s * 1000))


def peek(r: redis.Redis, job_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The copy, left in place (a publish that may duplicate a live message, and must not use up the copy
    a later release or re-publish needs)."""
    raw = r.get(key(job_id))
    if raw is None:
        return None
    payload, safety_job = json.loads(raw)
    return payload, safety_job


def take(r: redis.Redis, job_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    raw = r.getdel(key(job_id))
    if raw is None:
        return None
    payload, safety_job = json.loads(raw)
    return payload, safety_job
