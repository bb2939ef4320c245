"""The chain's hand-off (GPU stage -> safety stage) is published until the job's deadline, like every other step.

The next step used to travel as a Celery chain: the worker's tracer published it once the inference task
returned, with Celery's short publish retry (about half a second). A broker that refused for a few seconds (a
Redis restart, a failover, `maxmemory`) lost the step: the task was acknowledged, the row stayed `running`,
and only the reaper ended it, its grace after the deadline. Now the inference task publishes the safety step
itself, through `publish_until_deadline`: every transient broker error is retried with backoff until the
deadline; past it the job ends `expired` (`deadline_exceeded`, saying the broker refused) and its waiter wakes,
so a refused publish never keeps a job alive past its deadline.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from workers.settings import Settings
from workers.stages.finish import finish_job
from workers.stages.retry import is_transient, retry_transient
from workers.wire.errors import JobError

log = logging.getLogger(__name__)
REFUSED = "the broker refused to take the job to its safety stage until its deadline passed"


def publish_until_deadline(send: Callable[[], Any], job: dict[str, Any], settings: Settings, *, what: str) -> bool:
    """send() until it succeeds or the deadline passes; True once sent. On giving up, end the job `expired`
    and wake its waiters (False). A non-transient error is raised: a bug is not a broker outage."""
    try:
        # min_tries=1: a job already past its deadline is not worth a second publish; the next stage would
        # only end it `expired`, which is what happens here at once.
        retry_transient(send, job["deadline"], what=what, min_tries=1)
        return True
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.error("%s: the broker refused until the deadline; ending the job", what,
                  extra={"job_id": job["job_id"], "error": type(exc).__name__})
    finish_job(settings, job, "expired", error=JobError("deadline_exceeded", REFUSED))
    return False
