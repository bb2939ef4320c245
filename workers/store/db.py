"""Engine and session factory, one per process, created on first use (never at import)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from workers.settings import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            s = get_settings()
            # pool_pre_ping: a worker that outlives a database restart must not fail its next job.
            # connect_timeout: an unreachable server fails a connect in seconds, not at the kernel's TCP
            # timeout; statement_timeout: no query holds a connection (and a web thread) forever; pool_timeout:
            # an exhausted pool raises (the web answers 503 with Retry-After) instead of queueing without end.
            engine = create_engine(
                url, pool_pre_ping=True, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                pool_timeout=s.db_pool_timeout_s,
                connect_args={"connect_timeout": s.db_connect_timeout_s,
                              "options": f"-c statement_timeout={s.db_statement_timeout_ms}"})
            _engines[url] = engine
        return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


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
