"""Redis keys for result delivery and worker readiness.

Waiting: the final task RPUSHes a token to `job:<id>:done`; a waiter BLPOPs it, re-pushes it for any
other waiter, then reads the durable row from PostgreSQL (celery-notes §8: exact, and no shared
pub/sub consumer under threaded gunicorn).
Readiness: each GPU worker writes `workers:<model>:<hostname>` with a short TTL every heartbeat.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

DONE_TTL_S = 3600
_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def client(url: str) -> redis.Redis:
    with _lock:
        c = _clients.get(url)
        if c is None:
            c = redis.Redis.from_url(url, health_check_interval=30, max_connections=256)
            _clients[url] = c
        return c


def done_key(job_id: str) -> str:
    return f"job:{job_id}:done"


def announce_done(r: redis.Redis, job_id: str, state: str) -> None:
    pipe = r.pipeline()
    pipe.rpush(done_key(job_id), state)
    pipe.expire(done_key(job_id), DONE_TTL_S)
    pipe.execute()


def ended(r: redis.Redis, row_id: str, state: str, inflight_key: str | None) -> None:
    """Wake a job's or replay's waiters and free the customer's in-flight slot (its key travels in the
    task's message, so workers need not know how the web names it)."""
    announce_done(r, row_id, state)
    if inflight_key:
        r.zrem(inflight_key, row_id)


def job_ended(r: redis.Redis, job: dict[str, Any], state: str) -> None:
    ended(r, job["job_id"], state, job.get("inflight_key"))


def wait_done(r: redis.Redis, job_id: str, timeout_s: float) -> bool:
    """Block until the job's token appears or the timeout passes; leave the token for other waiters."""
    if timeout_s <= 0:
        return False
    got = r.blpop([done_key(job_id)], timeout=timeout_s)
    if got is None:
        return False
    announce_done(r, job_id, got[1].decode())
    return True


def heartbeat_key(model: str, hostname: str) -> str:
    return f"workers:{model}:{hostname}"


def publish_heartbeat(r: redis.Redis, model: str, hostname: str, info: dict[str, Any], ttl_s: float) -> None:
    info = {**info, "hostname": hostname, "at": time.time()}
    r.set(heartbeat_key(model, hostname), json.dumps(info), px=int(ttl_s * 1000))


def read_heartbeats(r: redis.Redis, model: str) -> list[dict[str, Any]]:
    keys = list(r.scan_iter(match=f"workers:{model}:*", count=100))
    values = r.mget(keys) if keys else []
    return [json.loads(v) for v in values if v]
