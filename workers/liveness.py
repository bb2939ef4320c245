"""A worker's proof that it still consumes, and the watchdog that ends it when it does not.

A Celery worker can lose its broker connection and never consume again while its process stays alive (after
a Redis restart kombu logged `Error on stopping Hub` and the worker sat idle: celery-notes.md, "Workers that
stop consuming"). PID or TCP checks cannot see that. So every WORKER_HEARTBEAT_S the watchdog pings its own
node through the broker (Celery's remote-control `ping`, answered by the consumer's event loop on the same
connection and poller as the task queues; `limit=1`, so a reply ends the wait at once). A reply proves the
consumer runs; the stage heartbeat (safety workers, written by its own thread every WORKER_HEARTBEAT_S, so a
slow ping never delays it) and the GPU runtime's heartbeat say `consuming` only while replies come: a hung
consumer shows within 4 intervals (2 s at the default 0.5 s), a stopped process within its heartbeat's TTL
(notify.heartbeat_ttl, also 2 s). With no reply for WORKER_WATCHDOG_S the process stops (SIGTERM, then a
hard exit) so its supervisor (ops/supervise.py under `make run`, systemd or Kubernetes in production) starts
a fresh one, which connects cleanly.

A restart cannot mend a broker that does not answer at all (stopped, at maxmemory, cut off by a partition):
it only adds a restart (model load included) to the outage, and in the issue-22 drills a worker that exited
12 s into a 20 s Redis hang was still starting when Redis came back (first success 9-13 s after the heal).
So a probe that fails because the broker refused or timed out counts at 1/BROKER_DOWN_PATIENCE of the clock;
a probe the broker carried that the consumer never answered counts in full. A broker that stays away still
ends the process, 3x later (a fresh process asks Sentinel for the master again).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from workers.settings import Settings
from workers.wire import notify

log = logging.getLogger(__name__)
EXIT_CODE = 70  # EX_SOFTWARE: the supervisor restarts it
BROKER_DOWN_PATIENCE = 3.0


class Watchdog:
    def __init__(self, app: Any, nodename: str, settings: Settings, *, stage: str | None = None):
        self.app, self.nodename, self.settings, self.stage = app, nodename, settings, stage
        self.interval_s = max(settings.worker_heartbeat_s, 0.1)
        self.exit_after_s = settings.worker_watchdog_s
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self.last_ok = time.monotonic()
        self.silent_s = 0.0  # the exit clock (see the module's docstring)
        self._stop = threading.Event()

    def start(self) -> Watchdog:
        threading.Thread(target=self._loop, name="watchdog", daemon=True).start()
        if self.stage is not None:
            threading.Thread(target=self._beat, name="stage-heartbeat", daemon=True).start()
        return self

    def consuming(self) -> bool:
        """True while the last reply is recent: three probes may go unanswered, the fourth not."""
        return time.monotonic() - self.last_ok <= max(4 * self.interval_s, 2 * self._probe_timeout())

    def _probe_timeout(self) -> float:
        return max(1.0, self.interval_s)

    def probe(self) -> bool | None:
        """True: the consumer answered; False: the broker carried the ping, nobody answered; None: the broker
        itself refused or timed out."""
        try:
            replies = self.app.control.ping(destination=[self.nodename], timeout=self._probe_timeout(), limit=1)
        except Exception:  # the broker is down: no reply
            log.warning("watchdog: ping failed", exc_info=True)
            return None
        return any(self.nodename in r for r in replies or [])

    def _loop(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            answered = self.probe()
            now = time.monotonic()
            elapsed, tick = now - tick, now
            if answered:
                self.last_ok, self.silent_s = now, 0.0
            else:
                self.silent_s += elapsed if answered is False else elapsed / BROKER_DOWN_PATIENCE
            if self._stop.is_set():
                return
            if self.exit_after_s > 0 and self.silent_s > self.exit_after_s:
                self._exit(now - self.last_ok)
                return
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - now)))

    def _beat(self) -> None:
        while not self._stop.is_set():
            self._publish()
            self._stop.wait(self.interval_s)

    def _publish(self) -> None:
        state = "ready" if self.consuming() else "not_consuming"
        try:
            notify.publish_heartbeat(notify.client(self.settings.redis_url), self.stage, self.hostname,
                                     {"state": state, "consuming": state == "ready", "node": self.nodename},
                                     ttl_s=notify.heartbeat_ttl(self.interval_s), key=notify.stage_key(self.stage))
        except Exception:
            log.warning("watchdog: heartbeat failed", exc_info=True)

    def _exit(self, silent: float) -> None:
        log.critical("watchdog: no proof of consumption for %.0f s; exiting so the supervisor restarts us", silent)
        os.kill(os.getpid(), signal.SIGTERM)  # a warm stop first: in-flight work may still finish
        timer = threading.Timer(self.settings.worker_drain_s + 5.0, os._exit, args=(EXIT_CODE,))
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        """Warm shutdown: consumption stops on purpose, so the watchdog must not count it; withdraw the beat."""
        self._stop.set()
        if self.stage is None:
            return
        try:
            notify.withdraw_heartbeat(notify.client(self.settings.redis_url), self.stage, self.hostname,
                                      key=notify.stage_key(self.stage))
        except Exception:
            log.warning("watchdog: could not withdraw the heartbeat", exc_info=True)


_current: Watchdog | None = None


def install(watchdog: Watchdog) -> Watchdog:
    global _current
    _current = watchdog.start()
    return watchdog


def current() -> Watchdog | None:
    return _current


def consuming() -> bool:
    """For the GPU runtime's heartbeat: True unless a watchdog runs and has seen no reply lately."""
    return _current is None or _current.consuming()
