"""Transient backend errors are retried with backoff until the job's deadline, not swallowed.

A task that raised on a database or Redis blip used to be acknowledged (Celery's default for a failed task)
with its row still active, so nothing ever ended it. Every step of a stage that touches PostgreSQL or Redis
(the claim, the final transition, the wake-up) goes through `retry_transient`: the server may restart under
it, and the step runs again once it is back. Each step is idempotent (a conditional UPDATE, an RPUSH of the
same token), so running it twice is safe. Past the deadline the error is raised: the task ends, and the
reaper (ops/reaper.py) ends the row, which is then worth no more than `expired` anyway.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import kombu.exceptions
import redis
import sqlalchemy.exc

log = logging.getLogger(__name__)
T = TypeVar("T")

# Connection refused or reset, a server restarting, a pool or statement timeout, Redis at `maxmemory` or a
# demoted master after a failover: worth another try. Anything else (a constraint, bad SQL, a bug) is not,
# and is raised at once.
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
    kombu.exceptions.OperationalError, ConnectionError,
)
FIRST_BACKOFF_S = 0.05
# A step waits at most 1.5 s (with jitter) between tries: the first success after a backend heals comes
# within that (issue 22's target is 5 s), at one try per second per waiting step during an outage.
MAX_BACKOFF_S = 1.0


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def retry_transient(fn: Callable[[], T], deadline: float, *, what: str, min_tries: int = 2) -> T:
    """fn(), again after each transient error (exponential backoff with jitter) until `deadline` (epoch s).

    At least `min_tries` attempts are made even when the deadline has passed, so a job that finishes just
    after its deadline still records its end after a single blip.
    """
    backoff, tries = FIRST_BACKOFF_S, 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            remaining = deadline - time.time()
            if not is_transient(exc) or (remaining <= 0 and tries >= min_tries):
                raise
            pause = min(backoff * (0.5 + random.random()), max(remaining, FIRST_BACKOFF_S))
            log.warning("%s: transient %s, retrying in %.2f s (try %d)", what, type(exc).__name__, pause, tries)
            time.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


class HandBack(Exception):
    """The work was not started and this worker is stopping: the task gives its message back to the queue
    (workers/tasks.py turns this into Celery's Reject(requeue=True)) for another worker to run."""
