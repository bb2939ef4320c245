"""Real backend faults at the web's doors (REST, /act, the openpi websocket's message handler): PostgreSQL
connections terminated under a request, and a private redis-server at `maxmemory` (noeviction). Every one is a
503 with Retry-After, never a 500, and an error in an error path (a refund, a release, a counter, a wake-up
token's re-push) never replaces it. Faults are real; only the moment a fault starts is chosen by wrapping one
step of the path (as test_enqueue_failure.py does for the publish)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import json_numpy
import numpy as np
import psycopg2
import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ops.faults import RedisServer
from tests.helpers import request_body
from web import db
from web.compat.openpi import codec, session
from web.compat.openpi.limits import budget_for
from web.compat.openpi.server import Limits, OpenpiServer
from web.errors import is_backend_error
from web.services import admission, submit
from workers.wire import notify

DOORS = ("/v1/jobs", "/v1/inference", "/act")


@pytest.fixture()
def private_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture()
def oom_app(settings, private_redis):
    """The app with its Redis (rate limits, in-flight, resend copies, wake-ups) on a private server; the Celery
    broker stays the shared one. `private_redis` can then be driven to maxmemory without touching anyone else."""
    from web.app import create_app

    return create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, redis_url=private_redis.url)})


@pytest.fixture()
def admin(settings):
    engine = create_engine(make_url(settings.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def _oom(url: str) -> None:
    redis.Redis.from_url(url).config_set("maxmemory", 1)


def _call(client, door: str, headers: dict):
    if door == "/act":
        body = {"image": np.zeros((64, 64, 3), dtype=np.uint8), "instruction": "pick", "model": "openvla-tiny"}
        return client.post("/act", data=json_numpy.dumps(body), headers={**headers,
                                                                         "Content-Type": "application/json"})
    return client.post(door, json=request_body(), headers=headers)


def _assert_503(resp, code: str = "backend_unavailable") -> None:
    assert resp.status_code == 503, (resp.status_code, resp.get_data(as_text=True))
    assert resp.get_json()["type"].endswith(code) and resp.headers["Retry-After"]


def _ws_answer(app, key: str) -> str:
    """One observation through the openpi server's own message handler (what a socket's frame reaches)."""
    server = OpenpiServer(app, Limits(threads=1))
    conn = session.Connection(model="openvla-tiny", authorization=f"Bearer {key}")
    obs = {"images": {"primary": np.zeros((64, 64, 3), dtype=np.uint8)}, "prompt": "pick"}
    try:
        return asyncio.run(server._serve_one(conn, budget_for(None, server.limits), codec.packb(obs)))
    finally:
        server.pool.shutdown()


def test_redis_at_maxmemory_is_a_503_on_every_door(oom_app, private_redis, make_customer):
    _, key, headers = make_customer()
    client = oom_app.test_client()
    _oom(private_redis.url)  # the rate-limit script is the first write: OutOfMemoryError (a ResponseError)
    for door in DOORS:
        _assert_503(_call(client, door, headers))
    frame = _ws_answer(oom_app, key)
    assert frame.startswith("503 backend_unavailable"), frame
    # Reads still work at maxmemory: the caller's usage shows nothing was counted.
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0


@pytest.mark.parametrize("step", ["queue_check", "prepare"])
def test_a_failed_refund_never_replaces_the_503(oom_app, private_redis, make_customer, monkeypatch, step):
    """Redis reaches maxmemory after the unit was counted: before the queue-depth check (the in-flight
    acquire, then the refund, fail), or inside the job's creation (the resend copy, the in-flight release and
    the refund fail). The answer is still the 503 of the first error."""
    headers = make_customer()[2]
    client = oom_app.test_client()
    target, name = (admission, "refuse_if_full") if step == "queue_check" else (submit, "prepare")
    real = getattr(target, name)

    def at_maxmemory(*args, **kwargs):
        _oom(private_redis.url)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, at_maxmemory)
    for door in DOORS:
        redis.Redis.from_url(private_redis.url).config_set("maxmemory", 0)
        _assert_503(_call(client, door, headers))
    monkeypatch.undo()
    redis.Redis.from_url(private_redis.url).config_set("maxmemory", 0)
    # The refunds failed, so the three units stay counted (at most a unit per refused request, never a 500).
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 3


def test_a_failed_re_push_keeps_the_waiters_outcome(private_redis):
    """A waiter that popped its job's token keeps the outcome even when Redis refuses to take the token back
    (maxmemory): a job that succeeded and was charged is never answered with an error."""
    r = redis.Redis.from_url(private_redis.url)
    job_id = str(uuid.uuid4())
    notify.ended(r, job_id, "succeeded", None, {"state": "succeeded", "result": {"action": {"values": [0.0]}}})
    _oom(private_redis.url)
    token = notify.wait_done(r, job_id, 1.0)
    assert notify.outcome(token)["state"] == "succeeded"


def _terminate_own_connection(admin):
    """Wrap a step of the request so that, when it runs, the web's own database connection is killed with
    pg_terminate_backend: the next statement (the job's INSERT) finds it dead."""
    real = submit.prepare

    def prepare(*args, **kwargs):
        pid = db.session().connection().connection.dbapi_connection.get_backend_pid()
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return real(*args, **kwargs)

    return prepare


def test_a_database_connection_killed_under_the_insert_is_a_503(client, app, make_customer, admin, db_session,
                                                                 monkeypatch):
    name, key, headers = make_customer()
    monkeypatch.setattr(submit, "prepare", _terminate_own_connection(admin))
    for door in DOORS:
        _assert_503(_call(client, door, headers))
    assert _ws_answer(app, key).startswith("503 backend_unavailable")
    monkeypatch.undo()
    # Nothing was written and every unit was refunded.
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0
    db_session.expire_all()
    assert client.get("/v1/jobs", headers=headers).get_json()["items"] == []


def _dbapi_error(orig: Exception, invalidated: bool) -> sqlalchemy.exc.DBAPIError:
    # What SQLAlchemy raises for a DBAPI error (the same constructor its connection uses).
    return sqlalchemy.exc.DBAPIError.instance("INSERT INTO jobs ...", {}, orig, psycopg2.Error,
                                              connection_invalidated=invalidated)


def test_a_database_error_on_a_dead_connection_is_a_backend_error():
    """psycopg2 raises a bare DatabaseError ("server closed the connection unexpectedly") when libpq has not yet
    marked the connection bad; SQLAlchemy wraps it as sqlalchemy.exc.DatabaseError with the connection
    invalidated. A DataError or IntegrityError on a live connection stays what it is."""
    dead = _dbapi_error(psycopg2.DatabaseError("server closed the connection unexpectedly"), True)
    assert type(dead) is sqlalchemy.exc.DatabaseError and is_backend_error(dead)
    assert not is_backend_error(_dbapi_error(psycopg2.IntegrityError("duplicate key"), False))
    assert not is_backend_error(_dbapi_error(psycopg2.DataError("out of range"), False))
    assert is_backend_error(redis.exceptions.OutOfMemoryError("OOM"))
    assert is_backend_error(redis.exceptions.ReadOnlyError("READONLY"))
    assert not is_backend_error(redis.exceptions.ResponseError("WRONGTYPE"))


def test_the_app_answers_a_dead_connection_503_and_keeps_422_and_500(settings):
    from web.app import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings})
    errors = {"dead": _dbapi_error(psycopg2.DatabaseError("server closed the connection unexpectedly"), True),
              "data": _dbapi_error(psycopg2.DataError("out of range"), False),
              "integrity": _dbapi_error(psycopg2.IntegrityError("duplicate key"), False)}

    @app.get("/raise/<which>")
    def _raise(which):
        raise errors[which]

    client = app.test_client()
    assert client.get("/raise/dead").status_code == 503
    assert client.get("/raise/dead").headers["Retry-After"]
    assert client.get("/raise/data").status_code == 422
    resp = client.get("/raise/integrity")
    assert resp.status_code == 500 and json.loads(resp.data)["type"].endswith("internal_error")
