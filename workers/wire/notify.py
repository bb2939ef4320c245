"""Redis keys for result delivery and worker readiness.

Waiting: the final task RPUSHes a token to `job:<id>:done` after its transaction committed; a waiter BLPOPs
it and re-pushes it for any other waiter (celery-notes §8: no shared pub/sub consumer under threaded
gunicorn). For a job whose submitter blocks on it (the sync paths mark it `waiter`), the worker's token carries
the columns its transition settled (JSON, `outcome`), exactly what the committed row now holds, so that waiter
need not read the row back; the bare state follows it in the same RPUSH, so the waiter that takes the full
token has nothing to put back on its way to the answer, and a waiter that takes a bare state re-pushes it.
A token that is only a state (submit-then-poll jobs, the web's cancel or expiry, the reaper) sends the waiter
to the durable row in PostgreSQL.
Readiness: each worker writes its heartbeat as one field of the hash `workers:<model>` (field = its
hostname, value = JSON with the time it was written). Reading a model's workers is one HGETALL, never a
SCAN of the keyspace; fields older than their TTL are ignored and pruned by whoever reads them.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from workers.wire import fastjson, frames, sentinel

# A token lives long enough for any waiter (waits are capped at WAIT_MAX_S) and any late poll, not longer.
DONE_TTL_S = 300
# A blocking wait asks Redis for at most MAX_BLOCK_S at a time (a longer wait loops, re-reading the row), so
# the socket timeout can sit just above it: a Redis that hangs (SIGSTOP, a partition that drops packets rather
# than resetting) is noticed within SOCKET_TIMEOUT_S, and a waiter whose job was accepted answers 503 with the
# job's id instead of blocking for a minute (issue 22 drills: hang-redis, part-web-redis). At 5 s / 10 s a
# POST /v1/jobs that met a hung Redis twice (the limits' look, then admission) had no answer within 15 s.
MAX_BLOCK_S = 2.0
SOCKET_TIMEOUT_S = 4.0
CONNECT_TIMEOUT_S = 5.0
_clients: dict[str, redis.Redis] = {}
log = logging.getLogger(__name__)
_lock = threading.Lock()


def client(url: str) -> redis.Redis:
    """One pooled client per URL per process (a pool is a process-wide resource, like an SQL engine)."""
    with _lock:
        c = _clients.get(url)
        if c is None:
            kw = {"health_check_interval": 30, "max_connections": 256, "socket_timeout": SOCKET_TIMEOUT_S,
                  "socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_keepalive": True, "retry_on_timeout": False}
            if sentinel.is_sentinel(url):
                from workers.settings import get_settings

                c = sentinel.master_client(url, get_settings().redis_sentinel_master, **kw)
            else:
                c = redis.Redis.from_url(url, **kw)
            _clients[url] = c
        return c


def done_key(job_id: str) -> str:
    return f"job:{job_id}:done"


def ended(r: redis.Redis, row_id: str, state: str, inflight_key: str | None,
          outcome: dict[str, Any] | None = None) -> None:
    """The one "it ended" path for jobs and replays: wake the waiters, free the customer's in-flight slot
    (its key travels in the task's message, so workers need not know how the web names it) and drop the
    job's images (workers/wire/frames.py), which nothing reads once it has ended."""
    tokens = [state] if outcome is None else [fastjson.dumps(outcome), state]
    _push(r, row_id, tokens, inflight_key, drop_frames=True)


def _push(r: redis.Redis, row_id: str, tokens: list[str], inflight_key: str | None, *,
          drop_frames: bool = False) -> None:
    pipe = r.pipeline()
    if drop_frames:
        pipe.delete(frames.key(row_id))
    pipe.rpush(done_key(row_id), *tokens)
    pipe.expire(done_key(row_id), DONE_TTL_S)
    if inflight_key:
        pipe.zrem(inflight_key, row_id)
    pipe.execute()


def job_ended(r: redis.Redis, job: dict[str, Any], state: str, outcome: dict[str, Any] | None = None) -> None:
    ended(r, job["job_id"], state, job.get("inflight_key"), outcome)


def wait_done(r: redis.Redis, job_id: str, timeout_s: float) -> str | None:
    """Block until the job's token appears or the timeout (at most MAX_BLOCK_S) passes (None); leave the token
    for other waiters."""
    if timeout_s <= 0:
        return None
    got = r.blpop([done_key(job_id)], timeout=min(timeout_s, MAX_BLOCK_S))
    if got is None:
        return None
    token = got[1].decode()
    if token.startswith("{"):  # the settled columns (outcome), parsed once, by the caller
        return token  # the worker's full token: its bare state follows it in the list, for any other waiter
    # Put a bare state back for any other waiter: they read the row, and the list that lives for DONE_TTL_S
    # stays a few bytes. A failed re-push (Redis at maxmemory, or gone since the BLPOP) must not cost this
    # waiter the outcome it holds: other waiters re-read the row within their 5 s poll.
    try:
        _push(r, job_id, [token], None)
    except redis.RedisError as exc:
        log.warning("re-push of job %s's wake-up token failed: %s: %s", job_id, type(exc).__name__, exc)
    return token


def outcome(token: str | None) -> dict[str, Any] | None:
    """The settled columns a worker's token carries, or None for a bare state (read the row instead)."""
    if not token or not token.startswith("{"):
        return None
    return fastjson.loads(token)


def heartbeat_key(model: str) -> str:
    return f"workers:{model}"


def stage_key(stage: str) -> str:
    """The heartbeat hash of a stage that is not a model: `safety`, `reaper`."""
    return f"stage:{stage}"


def heartbeat_ttl(interval_s: float) -> float:
    """How long a heartbeat written every `interval_s` counts as fresh: three beats may be missed (a busy
    process), the fourth not. At the default WORKER_HEARTBEAT_S of 0.5 s a stopped worker drops out of /health
    and admission within 2 s."""
    return max(4.0 * interval_s, 1.0)


def publish_heartbeat(r: redis.Redis, model: str, hostname: str, info: dict[str, Any], ttl_s: float,
                      *, key: str | None = None) -> None:
    info = {**info, "hostname": hostname, "at": time.time(), "ttl_s": ttl_s}
    key = key or heartbeat_key(model)
    pipe = r.pipeline()
    pipe.hset(key, hostname, json.dumps(info))
    # The hash itself goes when every worker of the model has gone quiet.
    pipe.expire(key, max(1, int(ttl_s * 4)))
    pipe.execute()


def withdraw_heartbeat(r: redis.Redis, model: str, hostname: str, *, key: str | None = None) -> None:
    r.hdel(key or heartbeat_key(model), hostname)


def read_heartbeats(r: redis.Redis, model: str, *, key: str | None = None) -> list[dict[str, Any]]:
    """The live heartbeats of a model's workers; stale ones are pruned as they are seen."""
    key = key or heartbeat_key(model)
    now, live, stale = time.time(), [], []
    for host, raw in r.hgetall(key).items():
        info = json.loads(raw)
        if now - float(info.get("at", 0)) <= float(info.get("ttl_s", 6)):
            live.append(info)
        else:
            stale.append(host)
    if stale:
        r.hdel(key, *stale)
    return live


# What the reaper did, one counter per action (ops/reaper.py writes, /metrics reads): HINCRBY, HGETALL.
REAPER_ACTIONS_KEY = "reaper:actions"


def count_actions(r: redis.Redis, counts: dict[str, int]) -> None:
    pipe = r.pipeline()
    for action, n in counts.items():
        if n:
            pipe.hincrby(REAPER_ACTIONS_KEY, action, n)
    pipe.execute()


def read_actions(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(REAPER_ACTIONS_KEY).items()}
