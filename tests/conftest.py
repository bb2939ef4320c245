"""Shared fixtures: real PostgreSQL, real Redis, tiny checkpoints on disk, the app, customers and keys.

The servers come from DATABASE_URL / REDIS_URL (CI points them at this machine's), or the project's
embedded real servers (ops/stack.py). The suite works in its own database (`vlaapi_test_<pid>`, dropped at
the end) and its own Redis database number, so it never touches anyone else's data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
# A Redis database per run (1..14; 15 belongs to the rate-limit unit tests); TEST_REDIS_DB pins it.
TEST_DB_RANGE = range(1, 15)
TEST_MODEL_DIR = ROOT / ".data" / "test-models"
TEST_OPS_TOKEN = "test-ops-token"  # /health details (X-Ops-Token) for the tests that read worker counts


def _redis_url_for_tests(url: str) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url.rstrip("/")
    pinned = os.environ.get("TEST_REDIS_DB")
    return f"{base}/{int(pinned) if pinned else _unwatched_db(base)}"


def _unwatched_db(base: str) -> int:
    """A database number no connected client has selected.

    A worker left behind by a killed run (or another run on the same server) keeps popping its queues; if
    this run shared its database, that worker would take this run's jobs and the tests would fail for
    reasons that are not in the code (CI saw exactly that). Flushing cannot stop a live consumer, so avoid
    its database instead. The start point rotates with the pid so two runs starting together differ.
    """
    busy = {int(c["db"]) for c in redis_lib.Redis.from_url(f"{base}/0").client_list()}
    start = os.getpid() % len(TEST_DB_RANGE)
    order = [TEST_DB_RANGE[(start + i) % len(TEST_DB_RANGE)] for i in range(len(TEST_DB_RANGE))]
    free = [db for db in order if db not in busy]
    if not free:
        raise pytest.UsageError(f"every Redis database {TEST_DB_RANGE.start}..{TEST_DB_RANGE.stop - 1} on "
                                f"{base} has a client on it; stop stray workers or set TEST_REDIS_DB")
    return free[0]


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the servers and export the settings before any test module imports the app or Celery."""
    from ops import stack

    server = stack.ensure_postgres()
    # One database per run, dropped at the end, so two runs on one server never step on each other.
    db_url = stack.ensure_database(server, f"vlaapi_test_{os.getpid()}", recreate=True)
    redis_url = _redis_url_for_tests(stack.ensure_redis())
    redis_lib.Redis.from_url(redis_url).flushdb()
    os.environ.update(
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        MODEL_DIR=str(TEST_MODEL_DIR),
        ENABLED_MODELS=f"openvla-tiny,pi0-tiny,openvla-slow={TEST_MODEL_DIR / 'openvla-tiny'},"
                       f"openvla-replay={TEST_MODEL_DIR / 'openvla-tiny'}",
        API_KEY_PEPPER="test-pepper",
        OPS_TOKEN=TEST_OPS_TOKEN,
        # Tests revoke and expire keys and expect the next request to see it; test_auth.py covers the cache.
        AUTH_CACHE_S="0",
        LOG_LEVEL="WARNING",
        BATCH_MAX_WAIT_MS="2",
    )
    from workers.store.migrate import upgrade

    upgrade(db_url)
    from workers.policies.fingerprint import FILE_NAME
    from workers.policies.presets import build_tiny_checkpoints

    # Built once, registered (workers here run as production: an unregistered checkpoint is refused); one
    # built before fingerprints existed is rebuilt (same seed, same weights).
    missing = [n for n in ("openvla-tiny", "pi0-tiny") if not (TEST_MODEL_DIR / n / FILE_NAME).exists()]
    if missing:
        build_tiny_checkpoints(TEST_MODEL_DIR, missing)
    config._vla_urls = (server, db_url)  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    urls = getattr(config, "_vla_urls", None)
    if urls:
        from ops import stack
        from workers.store.db import dispose_all

        dispose_all()
        stack.drop_database(*urls)


@pytest.fixture(scope="session")
def settings():
    from workers.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def redis_client(settings):
    return redis_lib.Redis.from_url(settings.redis_url)


@pytest.fixture()
def db_session(settings):
    from workers.store.db import session_factory

    with session_factory(settings.database_url)() as s:
        yield s


@pytest.fixture(scope="session")
def app(settings):
    from web.app import create_app

    return create_app({"TESTING": True, "SETTINGS": settings})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def make_customer(settings):
    """Factory: a fresh customer on a tier, with one API key; returns (customer_name, key, headers)."""
    import uuid

    from web.accounts import service
    from workers.store.db import session_scope

    def make(tier: str = "enterprise"):
        name = f"cust-{uuid.uuid4().hex[:10]}"
        with session_scope(settings.database_url) as s:
            customer = service.create_customer(s, name, tier)
            _, key = service.create_key(s, customer, settings.api_key_pepper)
        return name, key, {"Authorization": f"Bearer {key}"}

    return make


def db_name(url: str) -> str:
    return make_url(url).database or ""
