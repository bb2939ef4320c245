"""The worker's consumer, reconnecting to the broker within a second of its return (celeryconfig's
`worker_consumer`).

Celery's consumer reconnects through kombu's `Connection.ensure_connection` with its defaults: sleeps of 2, 4,
6, ... up to 30 s between tries. A Redis that came back after 10 s was found by the worker only at its next
try, up to 8 s later (after 20 s down, up to 10 s later); the watchdog (workers/liveness.py) sometimes got there
first and restarted the whole process. Issue 22's target is a first success within 5 s of the broker healing,
so the consumer tries again every RECONNECT_MAX_S at most, cheap against a refused or timed-out connect.

Only the consumer's own connection gets these intervals: the watchdog's ping (workers/liveness.py) takes a
connection from the app's pool and keeps kombu's defaults, so a worker whose broker stays away still has no
reply for WORKER_WATCHDOG_S and exits (tests/integration/test_liveness.py; it passed 5 of 5 runs with this
consumer on a loaded machine, where an earlier report had it hang). Celery's broker_connection_max_retries
(100) still bounds the tries, about 100 s at these intervals; the watchdog ends the process first.
kombu reads interval_* from `broker_transport_options` only for `default_channel` and `autoretry`, not for
the consumer's `ensure_connection`, so no setting reaches this.
"""
from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer as _CeleryConsumer

RECONNECT_START_S, RECONNECT_STEP_S, RECONNECT_MAX_S = 0.1, 0.2, 1.0


class Consumer(_CeleryConsumer):
    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection
        # Only the intervals differ from Celery's own call (its error handler, retry limit and shutdown check
        # stay), so this survives Celery upgrades that change the rest of ensure_connected.
        conn.ensure_connection = functools.partial(ensure, interval_start=RECONNECT_START_S,
                                                   interval_step=RECONNECT_STEP_S, interval_max=RECONNECT_MAX_S)
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection  # the instance attribute goes; the class's method shows again
