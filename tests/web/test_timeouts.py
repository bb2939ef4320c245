"""PostgreSQL limits on the real server: a statement past DB_STATEMENT_TIMEOUT_MS is cancelled, and a request
that finds the pool exhausted for DB_POOL_TIMEOUT_S is answered 503 with Retry-After, never a 500."""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from web.app import create_app
from workers.settings import reload_settings
from workers.store import db


@contextmanager
def _engine_settings(monkeypatch, settings, tag: str, **env: str):
    """Settings with these DB_* values and a URL of their own (engines are cached per URL), undone after."""
    url = make_url(settings.database_url).update_query_dict({"application_name": tag})
    url = url.render_as_string(hide_password=False)
    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        fresh = dataclasses.replace(reload_settings(), database_url=url)
        try:
            yield fresh
        finally:
            db.get_engine(url).dispose()
            with db._lock:
                db._engines.pop(url, None)
    reload_settings()


def test_statement_timeout_cancels_a_long_query(monkeypatch, settings):
    with _engine_settings(monkeypatch, settings, "stmt-timeout", DB_STATEMENT_TIMEOUT_MS="300") as s:
        t0 = time.monotonic()
        with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
            with db.get_engine(s.database_url).connect() as c:
                c.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - t0 < 3.0


def test_exhausted_pool_is_503_with_retry_after(monkeypatch, settings, make_customer):
    headers = make_customer()[2]
    with _engine_settings(monkeypatch, settings, "pool-timeout", DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0",
                          DB_POOL_TIMEOUT_S="0.3") as s:
        held = db.get_engine(s.database_url).connect()  # the pool's only connection, taken
        try:
            with create_app({"TESTING": True, "SETTINGS": s}).test_client() as c:
                resp = c.get("/v1/usage", headers=headers)
        finally:
            held.close()
        assert resp.status_code == 503, resp.get_json()
        assert resp.headers["Retry-After"] and resp.get_json()["type"].endswith("backend_unavailable")
        with create_app({"TESTING": True, "SETTINGS": s}).test_client() as c:
            assert c.get("/v1/usage", headers=headers).status_code == 200  # the connection is back
