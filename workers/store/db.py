"""Engine and session factory, one per process, created on first use (never at import)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from workers.settings import get_settings
from workers.wire import fastjson

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# A connection back in the pool for less than this is trusted without a ping (see _ping_if_idle).
PING_AFTER_IDLE_S = 1.0


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            s = get_settings()
            # A worker that outlives a database restart must not fail its next job: _ping_if_idle checks a
            # connection that sat idle before handing it out. connect_timeout: an unreachable server fails a
            # connect in seconds, not at the kernel's TCP timeout; statement_timeout: no query holds a connection
            # (and a web thread) forever; pool_timeout: an exhausted pool raises (the web answers 503 with
            # Retry-After) instead of queueing without end.
            engine = create_engine(
                url, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                pool_timeout=s.db_pool_timeout_s,
                json_serializer=fastjson.dumps, json_deserializer=fastjson.loads,
                connect_args={"connect_timeout": s.db_connect_timeout_s,
                              "options": f"-c statement_timeout={s.db_statement_timeout_ms}"})
            event.listen(engine, "connect", _note_checkin)  # a new connection has just proved itself
            event.listen(engine, "checkin", _note_checkin)
            event.listen(engine, "checkout", _ping_if_idle)
            _engines[url] = engine
        return engine


def _note_checkin(_dbapi_conn, record) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
    """pool_pre_ping, but only for a connection that has been idle: SQLAlchemy's pre-ping costs every
    transaction a round trip (two per job on the workers' path), though a connection used a moment ago is
    almost surely alive. A restart inside that moment still costs nothing lost: the workers retry transient
    errors (workers/stages/retry.py) and the web answers 503 with Retry-After; SQLAlchemy then drops every
    connection of the pool that predates the failure. Raising DisconnectionError makes the pool discard this
    connection and hand out a fresh one (up to three tries)."""
    if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as err:
        raise exc.DisconnectionError(f"connection failed its ping: {type(err).__name__}") from err


_factories: dict[str, sessionmaker[Session]] = {}


def session_factory(url: str) -> sessionmaker[Session]:
    # One per URL: a sessionmaker builds a Session subclass, and doing that per transaction cost every job
    # a measurable slice of a worker's CPU (class creation and event-listener set-up).
    factory = _factories.get(url)
    if factory is None:
        factory = _factories.setdefault(url, sessionmaker(get_engine(url), expire_on_commit=False))
    return factory


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error, so nothing is half-written."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
