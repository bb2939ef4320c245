"""The reaper: PostgreSQL is the truth, and this small loop makes Redis and the workers agree with it.

Every REAPER_WATCH_S (0.25 s) it reads the GPU workers' heartbeats (one HGETALL per model) and writes its own;
a GPU worker whose heartbeat stopped (killed, host lost, SIGSTOPped past its TTL) has its claimed jobs
released at once (`release_worker`): each still-running job it claimed (jobs.worker) is re-published from the
copy of its message (workers/wire/resend.py, GETDEL: once) and set back to `queued` while its deadline
allows, else ended `expired`/`lost` and its waiters woken. So a dead worker's jobs move within ~2.5 s of its
death (heartbeat TTL plus one watch), not at their deadline plus the grace; so are its model's newest `queued`
jobs (`republish_recent`: its BRPOP may have taken one as it died; a duplicate finds its job claimed).

Each pass (every REAPER_INTERVAL_S, 2 s by default):
  - releases the jobs of any worker named by a running job that has no live heartbeat (a death the watch
    missed: the reaper itself was down, or it started after the death);
  - re-publishes, at most once, every job still `queued` 5 s after it was accepted, from the short-lived copy
    of its message the web keeps (workers/wire/resend.py): the web died between commit and publish, or the
    broker lost the message; a duplicate of a message that was merely slow is harmless (its claim fails);
  - ends `expired` (JobError "lost") every job still active REAPER_GRACE_S after its deadline: its message
    or its worker is gone and its copy has expired (job rows keep images by hash only); its waiters wake
    and its customer's in-flight slot frees at once (the same notify.ended as the workers);
  - re-publishes the current slice message of every replay nobody has touched for a few slice lengths (it
    resumes from its stored rows);
  - every REAPER_SWEEP_S: deletes upload folders older than an hour that no active replay reads, and
    in-flight leases whose job or replay has ended (a lost wake-up, e.g. Redis was down when it ended).
Every row is taken `FOR UPDATE SKIP LOCKED` (workers/store/reaping.py), so two reapers never act twice.
Each action is counted in the Redis hash `reaper:actions` (exported by /metrics); the reaper's heartbeat
is the `stage:reaper` hash, which /health reads.

Run: `python -m ops.reaper` or `vlaapi reaper` (the Procfile's `reaper:` line).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

from web.ratelimit.inflight import InFlight
from web.services import catalog
from workers import logs
from workers.settings import Settings, get_settings
from workers.store import reaping
from workers.store.db import session_scope
from workers.wire import notify, resend
from workers.wire.queues import replay_slice_s

log = logging.getLogger("ops.reaper")
STAGE = "reaper"
BEAT_S = 0.5  # the reaper's own heartbeat period, written from its watch ticks
RELEASE_MIN_S = 0.25  # a released job with less time left than this is ended, not re-published to expire


@dataclass(frozen=True)
class ReaperConfig:
    interval_s: float = 2.0
    grace_s: float = 10.0  # past a job's deadline before it counts as lost (a worker ends it at the deadline)
    sweep_s: float = 30.0  # how often uploads and leases are swept (they are not urgent)
    upload_age_s: float = 3600.0
    watch_s: float = 0.25  # how often GPU workers' heartbeats are read (a dead one's jobs are released)

    @classmethod
    def from_env(cls) -> ReaperConfig:
        env = os.environ.get
        return cls(float(env("REAPER_INTERVAL_S", "2")), float(env("REAPER_GRACE_S", "10")),
                   float(env("REAPER_SWEEP_S", "30")), float(env("REAPER_UPLOAD_AGE_S", "3600")),
                   float(env("REAPER_WATCH_S", "0.25")))


class Reaper:
    def __init__(self, settings: Settings, config: ReaperConfig | None = None):
        self.settings, self.config = settings, config or ReaperConfig()
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self._last_sweep = float("-inf")
        self._last_beat = float("-inf")
        self._gpu_workers: dict[str, tuple[str, str]] = {}  # hostname -> (model, last state), each seen live

    @property
    def redis(self):
        return notify.client(self.settings.redis_url)

    def stall_s(self) -> float:
        """A replay untouched this long has lost its slice message: a few slice lengths, plus the grace."""
        return 4 * replay_slice_s(self.settings.broker_visibility_timeout_s) + self.config.grace_s

    def run_pass(self, *, sweep: bool | None = None) -> dict[str, int]:
        """One pass; returns what it did. A failing step is logged and the others still run."""
        counts = {"passes": 1}
        steps = [("jobs_released", self.release_orphans), ("jobs_republished", self.republish_jobs),
                 ("jobs_expired", self.expire_jobs), ("replays_resumed", self.resume_replays)]
        if sweep if sweep is not None else time.monotonic() - self._last_sweep >= self.config.sweep_s:
            self._last_sweep = time.monotonic()
            steps += [("uploads_deleted", self.delete_orphan_uploads), ("leases_released", self.release_leases)]
        for name, step in steps:
            try:
                counts[name] = step()
            except Exception:  # a backend outage: the next pass tries again
                counts["errors"] = counts.get("errors", 0) + 1
                log.warning("reaper step %s failed", name, exc_info=True)
        self._report(counts)
        return counts

    def _inflight_key(self, customer_id: str) -> str:
        return InFlight(self.redis).key(customer_id)

    def expire_jobs(self) -> int:
        with session_scope(self.settings.database_url) as s:
            ended = reaping.expire_lost_jobs(s, self.config.grace_s)
        self._announce(ended)
        return len(ended)

    def _announce(self, ended: list[reaping.Ended]) -> None:
        for row in ended:  # after the commit: a waiter woken now reads the terminal row
            log.warning("job lost: expired by the reaper", extra={"job_id": row.id})
            try:
                notify.ended(self.redis, row.id, row.state, self._inflight_key(row.customer_id))
            except Exception:  # waiters still read the row at their timeout; the lease sweep frees the slot
                log.warning("could not announce a reaped job", extra={"job_id": row.id}, exc_info=True)

    def watch(self) -> dict[str, int]:
        """Read the GPU workers' heartbeats; release the jobs of each that was live and no longer is. A worker
        that was stopping (its batcher `stopped`: a drain hands its jobs back itself) is only forgotten."""
        beats = {b["hostname"]: (m, b.get("state", "")) for m in catalog.enabled_models(self.settings)
                 for b in notify.read_heartbeats(self.redis, m)}
        dead = {h: m for h, (m, st) in self._gpu_workers.items() if h not in beats and st in ("ready", "loading")}
        self._gpu_workers = beats
        return {"jobs_released": sum(self.release_worker(h) for h in dead),
                "jobs_republished": sum(self.republish_recent(m) for m in set(dead.values()))}

    def release_orphans(self) -> int:
        """Release the jobs of every worker a running job names that has no live heartbeat (read from the
        job's model's hash, so a worker of a model this reaper's ENABLED_MODELS omits is judged too)."""
        with session_scope(self.settings.database_url) as s:
            claimed = reaping.claiming_workers(s)
        live = {b["hostname"] for m in {m for _, m in claimed} for b in notify.read_heartbeats(self.redis, m)}
        return sum(self.release_worker(w) for w in {w for w, _ in claimed} - live)

    def release_worker(self, worker: str) -> int:
        """Re-queue (deadline allowing) or end each running job `worker` claimed; safe to run twice at once."""
        from workers.tasks import send_job  # the one place messages are sent

        ended, released = [], 0
        with session_scope(self.settings.database_url) as s:
            for job in reaping.claimed_by(s, worker):
                copy = resend.take(self.redis, str(job.id))  # GETDEL: one releaser re-publishes it
                if copy is not None and job.deadline_at.timestamp() - time.time() > RELEASE_MIN_S:
                    send_job(*copy)  # before the commit: a crash in between leaves a duplicate, never a loss
                    reaping.requeue(s, job)
                else:
                    ended.append(reaping.end_lost(s, job))
                released += 1
        if released:
            log.warning("GPU worker gone: its jobs released", extra={"worker": worker, "released": released,
                                                                     "ended": len(ended)})
        self._announce(ended)
        return released

    def republish_jobs(self) -> int:
        """Publish again the kept copy of every job still queued REPUBLISH_AFTER_S after it was accepted."""
        with session_scope(self.settings.database_url) as s:
            ids = reaping.unclaimed_jobs(s, resend.REPUBLISH_AFTER_S)
        return self._publish(ids, resend.take, "job unclaimed: message re-published")  # GETDEL: once

    def republish_recent(self, model: str) -> int:
        """Publish again `model`'s jobs queued since just before one of its workers died (copies left in place)."""
        within_s = notify.heartbeat_ttl(self.settings.worker_heartbeat_s) + self.config.watch_s + 1.0
        with session_scope(self.settings.database_url) as s:
            ids = reaping.recently_queued(s, model, within_s)
        return self._publish(ids, resend.peek, "GPU worker gone: a just-queued job re-published")

    def _publish(self, ids: list[str], read, what: str) -> int:
        from workers.tasks import send_job  # the one place messages are sent

        sent = 0
        for job_id in ids:
            if (copy := read(self.redis, job_id)) is not None:
                log.warning(what, extra={"job_id": job_id})
                send_job(*copy)
                sent += 1
        return sent

    def resume_replays(self) -> int:
        from workers.tasks import start_replay  # the one place messages are sent

        with session_scope(self.settings.database_url) as s:
            msgs = reaping.stalled_replays(s, self.stall_s())
        for msg in msgs:
            msg["inflight_key"] = self._inflight_key(msg.pop("customer_id"))
            log.warning("replay stalled: slice re-published", extra={"replay_id": msg["replay_id"], "seq": msg["seq"]})
            start_replay(msg)
        return len(msgs)

    def delete_orphan_uploads(self) -> int:
        base = Path(self.settings.replay_upload_dir)
        if not base.is_dir():
            return 0
        with session_scope(self.settings.database_url) as s:
            keep = reaping.referenced_uploads(s)
        cutoff, deleted = time.time() - self.config.upload_age_s, 0
        for folder in base.iterdir():
            if folder.is_dir() and not folder.is_symlink() and folder.name not in keep \
                    and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                deleted += 1
        return deleted

    def release_leases(self) -> int:
        """Drop in-flight leases whose job or replay has ended, or whose time ran out."""
        since = self.settings.max_deadline_ms / 1000.0 + 60.0  # no job lease outlives its deadline by more
        with session_scope(self.settings.database_url) as s:
            customers = reaping.customer_ids(s, since)
        if not customers:
            return 0
        r, keys = self.redis, [self._inflight_key(c) for c in customers]
        now_ms = int(time.time() * 1000)
        pipe = r.pipeline()
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", now_ms)
            pipe.zrange(key, 0, -1)
        res = pipe.execute()
        released = sum(res[0::2])
        members = {key: [m.decode() for m in ms] for key, ms in zip(keys, res[1::2], strict=True)}
        with session_scope(self.settings.database_url) as s:
            ended = reaping.ended_among(s, [m for ms in members.values() for m in ms])
        for key, ms in members.items():
            stale = [m for m in ms if m in ended]
            if stale:
                released += r.zrem(key, *stale)
        return released

    def tick(self) -> int:
        """Between passes (every watch_s): release the jobs of GPU workers that died; say we are alive."""
        counts: dict[str, int] = {}
        try:
            counts = {k: n for k, n in self.watch().items() if n}
        except Exception:  # a backend outage: the next tick tries again
            log.warning("reaper watch failed", exc_info=True)
        if counts:
            self._report(counts)
        elif time.monotonic() - self._last_beat >= BEAT_S:
            self._report({})
        return counts.get("jobs_released", 0)

    def _report(self, counts: dict[str, int]) -> None:
        try:
            notify.count_actions(self.redis, counts)
            # The same freshness rule as the workers' (2 s): a stopped reaper shows on /health as fast.
            notify.publish_heartbeat(self.redis, STAGE, self.hostname, {"state": "ready"},
                                     notify.heartbeat_ttl(BEAT_S), key=notify.stage_key(STAGE))
            self._last_beat = time.monotonic()
        except Exception:
            log.warning("reaper could not report to Redis", exc_info=True)

    def withdraw(self) -> None:
        try:
            notify.withdraw_heartbeat(self.redis, STAGE, self.hostname, key=notify.stage_key(STAGE))
        except Exception:
            log.warning("could not withdraw the reaper's heartbeat", exc_info=True)


def serve(reaper: Reaper, stop: threading.Event) -> None:
    """A watch tick every watch_s and a pass every interval_s until `stop` is set (SIGTERM, SIGINT); a pass in
    progress finishes first."""
    next_pass = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        if t0 >= next_pass:
            next_pass = t0 + reaper.config.interval_s
            counts = reaper.run_pass()
            if any(v for k, v in counts.items() if k != "passes"):
                log.info("reaper pass", extra=counts)
        reaper.tick()
        stop.wait(max(0.0, min(t0 + reaper.config.watch_s, next_pass) - time.monotonic()))
    reaper.withdraw()


@click.command("reaper")
@click.option("--once", is_flag=True, help="run one pass (uploads and leases included), print it and exit")
def main(once: bool) -> None:
    """Expire lost jobs, resume stalled replays, delete orphaned uploads and stale leases, forever."""
    settings = get_settings()
    logs.configure(settings.log_level)
    reaper = Reaper(settings, ReaperConfig.from_env())
    if once:
        click.echo(reaper.run_pass(sweep=True))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("reaper started", extra={"interval_s": reaper.config.interval_s, "grace_s": reaper.config.grace_s})
    serve(reaper, stop)


if __name__ == "__main__":
    main()
