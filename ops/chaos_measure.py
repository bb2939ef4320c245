"""What a drill measured, from the answers its load got (ops/chaos_load.py) and the rows PostgreSQL holds.

Rows are found by the Idempotency-Key each request carried, so a request whose row was committed is counted
as accepted whatever its answer was. Per drill:

  accepted              rows the load's requests made (PostgreSQL's word, not the answers')
  finished              those rows by state, once every deadline plus the reaper's grace has passed
  stuck                 rows not terminal by then
  lost_rows             job ids answered to a client with no row behind them
  expired_lost          rows the reaper ended `lost` (their message or worker was gone)
  duplicate_usage_rows  usage rows beyond one per job
  non_503_5xx           answers (submissions, retries, polls) 500-599 other than 503, and other than a
                        synchronous 504 deadline_exceeded with the job's id (that is the job's outcome;
                        counted as deadline_504)
  accepted_answered_wrongly  requests with a row whose answer (to the attempt that made the row: a retry
                        can) was neither the job's outcome, nor its id, nor a 503 telling its id (a 503
                        "nothing happened", a 500, no answer at all)
  retry_mismatch        retries with the same key that answered another job, or a key with two jobs
  late_2s               rows that ended more than 2 s after their deadline (or never)
  recovered_s           from the end of the fault to the first success of a job submitted after it
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ops.chaos_load import TERMINAL, Answer, Load, Submission
from ops.chaos_stack import Stack

LATE_S = 2.0


def rows(stack: Stack, keys: list[str], timeout: float = 60.0) -> list[Any]:
    """(id, key, state, deadline_at, finished_at, created_at, code) per row, retried while the database is away."""
    from sqlalchemy import select

    from workers.store.db import session_scope
    from workers.store.models import Job

    end = time.monotonic() + timeout
    while True:
        try:
            with session_scope(stack.db_url) as s:
                return s.execute(select(Job.id, Job.idempotency_key, Job.state, Job.deadline_at, Job.finished_at,
                                        Job.created_at, Job.error["code"].astext.label("code"))
                                 .where(Job.idempotency_key.in_(keys))).all()
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(1.0)


def duplicates(stack: Stack, ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select

    from workers.store.db import session_scope
    from workers.store.models import UsageRecord

    with session_scope(stack.db_url) as s:
        counts = s.execute(select(UsageRecord.job_id, func.count()).where(UsageRecord.job_id.in_(ids))
                           .group_by(UsageRecord.job_id)).all()
    return sum(n - 1 for _, n in counts if n > 1)


def epoch(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def _maker(sub: Submission, created: float) -> Answer:
    """The attempt whose request made the row: the last one sent before the row's created_at (a retry with the
    same key may be the one that made it, when the first was refused before anything was written)."""
    made = [a for a in (sub.first, *sub.retries) if a.at <= created]
    return made[-1] if made else sub.first


def _answered_right(sub: Submission, row: Any) -> bool:
    """The answer of the attempt that made the row told the job's outcome or its id (a 503 included); no
    answer, or one without the id, is a client told "nothing happened" about a job that runs and is charged."""
    return _maker(sub, epoch(row.created_at)).job_id == str(row.id)


def _label(sub: Submission, a: Answer) -> str:
    return f"{sub.door} {a.status} {a.code or ''}".strip()


def _bad_5xx(a: Answer) -> bool:
    """A 5xx other than 503, and other than the 504 that is a job's outcome (its deadline passed first: the
    synchronous door's documented answer, with the job's id)."""
    outcome = a.status == 504 and a.code == "deadline_exceeded" and a.job_id is not None
    return 500 <= a.status < 600 and a.status != 503 and not outcome


def measure(stack: Stack, load: Load, fault_end: float) -> dict[str, Any]:
    subs = load.submissions
    found = rows(stack, [s.key for s in subs])
    by_key = {r.idempotency_key: r for r in found}
    told = {s.job_id for s in subs if s.job_id}
    row_ids = {str(r.id) for r in found}
    statuses = Counter(s.first.status for s in subs)
    every = [a for s in subs for a in (s.first, *s.retries)]
    wrong = [s for s in subs if s.key in by_key and not _answered_right(s, by_key[s.key])]
    mismatch = sum(1 for s in subs if s.key in by_key for a in (s.first, *s.retries)
                   if a.job_id and a.job_id != str(by_key[s.key].id))
    after = [epoch(r.finished_at) for r in found if r.state == "succeeded" and epoch(r.created_at) >= fault_end]
    return {
        "accepted": len(found), "submitted": len(subs),
        "answers": {door: {str(k): v for k, v in sorted(Counter(s.first.status for s in subs
                                                               if s.door == door).items())}
                    for door in ("sync", "async")},
        "polls": {str(k): v for k, v in sorted(load.polls.items())},
        "finished": dict(sorted(Counter(r.state for r in found).items())),
        "stuck": sum(r.state not in TERMINAL for r in found),
        "lost_rows": len(told - row_ids),
        "expired_lost": sum(r.state == "expired" and r.code == "lost" for r in found),
        "duplicate_usage_rows": duplicates(stack, [r.id for r in found]),
        "non_503_5xx": sum(1 for a in every if _bad_5xx(a))
        + sum(n for code, n in load.polls.items() if 500 <= code < 600 and code != 503),
        "deadline_504": sum(1 for a in every if a.status == 504 and not _bad_5xx(a)),
        "unanswered": statuses.get(0, 0),
        "accepted_answered_wrongly": len(wrong),
        "wrong_answers": dict(Counter(_label(s, _maker(s, epoch(by_key[s.key].created_at))) for s in wrong)),
        "retried": sum(1 for s in subs if s.retries),
        "retry_mismatch": mismatch,
        "late_2s": sum(r.finished_at is None or epoch(r.finished_at) > epoch(r.deadline_at) + LATE_S for r in found),
        "recovered_s": round(min(after) - fault_end, 1) if after else None,
    }


def misses(r: dict[str, Any], recover_within: float) -> list[str]:
    """The issue-22 targets a drill missed, by name."""
    out = [k for k in ("stuck", "lost_rows", "duplicate_usage_rows", "non_503_5xx", "accepted_answered_wrongly",
                       "retry_mismatch", "late_2s") if r[k]]
    if r["recovered_s"] is None or r["recovered_s"] > recover_within:
        out.append("recovered_s")
    return out
