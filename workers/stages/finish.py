"""The one path by which a job ends, whichever stage ends it: a conditional UPDATE to the terminal state
(so a redelivered task cannot end it twice, and usage is recorded once), then the wake-up for waiters and
the release of the customer's in-flight slot."""
from __future__ import annotations

import logging
from typing import Any

from workers.settings import Settings
from workers.stages.retry import retry_transient
from workers.store import jobs as jobstore
from workers.store.db import session_scope
from workers.wire import notify, telemetry
from workers.wire.errors import JobError

log = logging.getLogger(__name__)


def finish_job(settings: Settings, job: dict[str, Any], state: str, *, result: dict[str, Any] | None = None,
               error: JobError | None = None, timings: jobstore.StageTimings | None = None) -> bool:
    """End the job in `state`; True if this call ended it (False: it had already ended).

    The transition and the wake-up are retried apart: once the row is terminal, a retried transition would
    answer False and the wake-up would never be sent.
    """
    def transition() -> dict[str, Any] | None:
        with session_scope(settings.database_url) as s:
            return jobstore.finish(s, job["job_id"], state, result=result,
                                   error=None if error is None else error.to_dict(), timings=timings)

    outcome = retry_transient(transition, job["deadline"], what="finish job")
    changed = outcome is not None
    if changed:
        # Only a job whose submitter blocks on it gets the settled row in its token: a token lives for minutes,
        # and submit-then-poll clients (most of the volume) read the row when they ask anyway.
        _wake(settings, job, state, outcome if job.get("waiter") else None)
        telemetry.job_finished(notify.client(settings.redis_url), job, state, result,
                               timings.safety_check_ms if timings else None)
        log.info("job finished", extra={"job_id": job["job_id"], "state": state})
    return changed


def announce_expired(settings: Settings, job: dict[str, Any]) -> None:
    """A claim found the job already expired (by its waiter or the reaper): wake anyone still waiting."""
    _wake(settings, job, "expired")


def _wake(settings: Settings, job: dict[str, Any], state: str, outcome: dict[str, Any] | None = None) -> None:
    """Wake the waiters; `outcome` (the settled columns, committed already) spares them reading the row."""
    retry_transient(lambda: notify.job_ended(notify.client(settings.redis_url), job, state, outcome),
                    job["deadline"], what="wake waiters")
