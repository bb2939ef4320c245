"""Hosts for the multi-host drills: network namespaces joined by veth links, and partitions made by setting a
link down (`tc netem` is absent here; a link that is down drops every packet, as a dead switch port does).

    drill host (this process, the root namespace) ──front link── web
    db host: redis-server on its own bridge (R), PostgreSQL on another (P), the reaper beside them
    every other host (web, gpu, safety, the drill) has one veth link into R and one into P

Redis and PostgreSQL sit on two bridges with an address each, so a host can lose one and keep the other:
`cut("gpu", "redis")` sets the GPU host's port on bridge R down (on the db side) and nothing else. Addresses are
10.213.<16 i + k>.0/24, with i a slot held by a file lock so two runs at once (a test and a full drill) do
not meet; only these namespaces use them. Everything is removed by `down()`, and namespaces a dead run left
behind are removed by the next `up()` (their names carry the pid that made them).
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from ops.chaos_stack import Stack, StackConfig
from ops.faults import PostgresServer, RedisServer, netns_preexec

PREFIX = "vchaos"
HOSTS = ("web", "gpu", "safety")  # each its own namespace; the drill host is the root namespace
# A host's number on every bridge; more GPU hosts (the fleet bench's) are named with three letters of their own,
# since a link's name carries the host's first three.
HOST_NUMBERS = {"db": 1, "drill": 2, "web": 3, "gpu": 4, "safety": 5, "gpb": 6, "gpc": 7, "gpd": 8}
GPU_HOSTS = ("gpu", "gpb", "gpc", "gpd")
SERVERS = {"redis": "r", "postgres": "p"}


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def available() -> str | None:
    """None when namespaces can be made here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    try:
        made = ip("netns", "add", probe, check=False)
        return None if made.returncode == 0 else f"`ip netns add` failed: {made.stderr.strip()}"
    except FileNotFoundError:
        return "the `ip` command (iproute2) is missing"
    finally:
        ip("netns", "del", probe, check=False)


def _namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX + "-")]


def reap_stale() -> None:
    """Remove namespaces left by a run whose process is gone (killed before its cleanup ran)."""
    for name in _namespaces():
        m = re.match(rf"{PREFIX}-(\d+)-\d+-", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            ip("netns", "del", name, check=False)


def _claim_slot() -> tuple[int, int]:
    """One of 16 slots (address range and interface names), held by an exclusive lock on a file for as long as
    this run lives: two runs starting together cannot pick the same one (looking at the namespaces already made
    could not tell them apart), and the kernel frees a killed run's slot with its process."""
    for i in range(16):
        fd = os.open(f"/tmp/{PREFIX}-slot-{i}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return i, fd
    raise RuntimeError("all 16 multi-host drill slots are held by other runs")


class Net:
    """The namespaces and links of one multi-host stack."""

    def __init__(self, hosts: tuple[str, ...] = HOSTS) -> None:
        reap_stale()
        self.hosts = hosts
        self.index, self._slot = _claim_slot()
        self.tag = f"vc{self.index:x}"  # interface names are at most 15 characters
        self.made: list[str] = []

    def ns(self, host: str) -> str | None:
        """The namespace of a host (`db`, `web`, `gpu`, `safety`); None for the drill host."""
        return None if host == "drill" else f"{PREFIX}-{os.getpid()}-{self.index}-{host}"

    def _net(self, k: int) -> str:
        return f"10.213.{16 * self.index + k}"

    def addr(self, host: str, server: str) -> str:
        """A host's address on the bridge of `server` (redis, postgres), or `front` (drill ↔ web)."""
        k = {"redis": 1, "postgres": 2, "front": 3}[server]
        return f"{self._net(k)}.{HOST_NUMBERS[host]}"

    def _port(self, host: str, server: str) -> str:
        """The db-side name of a host's link into a server's bridge (what `cut` sets down)."""
        return f"{self.tag}{host[:3]}{SERVERS[server]}b"

    def up(self) -> Net:
        if self._slot is None:  # brought up again after down(): claim a slot anew
            self.index, self._slot = _claim_slot()
            self.tag = f"vc{self.index:x}"
        try:
            for host in ("db", *self.hosts):
                ip("netns", "add", self.ns(host))
                self.made.append(self.ns(host))
                ip("link", "set", "lo", "up", netns=self.ns(host))
            db = self.ns("db")
            for server, s in SERVERS.items():
                bridge = f"br{s}"
                ip("link", "add", bridge, "type", "bridge", netns=db)
                ip("addr", "add", f"{self.addr('db', server)}/24", "dev", bridge, netns=db)
                ip("link", "set", bridge, "up", netns=db)
                for host in ("drill", *self.hosts):
                    self._link(host, server, bridge)
            self._front()
        except BaseException:
            self.down()
            raise
        return self

    def _link(self, host: str, server: str, bridge: str) -> None:
        end, port, db = f"{self.tag}{host[:3]}{SERVERS[server]}", self._port(host, server), self.ns("db")
        where = ["netns", self.ns(host)] if self.ns(host) else []
        ip("link", "add", end, *where, "type", "veth", "peer", "name", port, "netns", db)
        ip("link", "set", port, "master", bridge, "up", netns=db)
        ip("addr", "add", f"{self.addr(host, server)}/24", "dev", end, netns=self.ns(host))
        ip("link", "set", end, "up", netns=self.ns(host))

    def _front(self) -> None:
        mine, theirs, web = f"{self.tag}frd", f"{self.tag}frw", self.ns("web")
        ip("link", "add", mine, "type", "veth", "peer", "name", theirs, "netns", web)
        ip("addr", "add", f"{self.addr('drill', 'front')}/24", "dev", mine)
        ip("link", "set", mine, "up")
        ip("addr", "add", f"{self.addr('web', 'front')}/24", "dev", theirs, netns=web)
        ip("link", "set", theirs, "up", netns=web)

    def cut(self, host: str, servers: tuple[str, ...]) -> None:
        for server in servers:
            ip("link", "set", self._port(host, server), "down", netns=self.ns("db"))

    def heal(self, host: str, servers: tuple[str, ...]) -> None:
        for server in servers:
            ip("link", "set", self._port(host, server), "up", netns=self.ns("db"))

    def down(self) -> None:
        """Delete every namespace (their links go with them) and the drill host's ends. Processes inside
        must be stopped first, or a namespace outlives its name."""
        for name in self.made:
            ip("netns", "del", name, check=False)
        for server in SERVERS.values():
            ip("link", "del", f"{self.tag}dri{server}", check=False)
        ip("link", "del", f"{self.tag}frd", check=False)
        self.made.clear()
        if self._slot is not None:  # the links are gone: another run may take this slot now
            os.close(self._slot)
            self._slot = None


class NetStack(Stack):
    """ops/chaos_stack.py's stack spread over hosts: redis-server and PostgreSQL (and the reaper, which must
    outlive any partition it is asked to clean up after) on the db host, web, GPU and safety workers each on
    their own, every server bound to its namespace address."""

    HOST_OF = {"web": "web", "gpu": "gpu", "safety": "safety", "reaper": "db"}

    def __init__(self, cfg: StackConfig, work_dir: Path | None = None):
        if cfg.sentinel:
            raise ValueError("the multi-host stack runs one redis-server, not Sentinel")
        super().__init__(cfg, work_dir)
        self.net = Net()
        db = self.net.ns("db")
        self.redis = RedisServer(self.dir / "redis", 6379, appendonly=cfg.redis_appendonly,
                                 host=self.net.addr("db", "redis"), netns=db)
        self.pg = PostgresServer(self.dir / "pg", 5432, host=self.net.addr("db", "postgres"), netns=db)
        self.web_host, self.web_port = self.net.addr("web", "front"), 8000

    def start(self, timeout: float = 180.0) -> NetStack:
        self.net.up()
        try:
            super().start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def preexec(self, name: str) -> Callable[[], None] | None:
        return netns_preexec(self.net.ns(self.HOST_OF[name]))

    def stop(self, *, remove: bool = False) -> None:
        try:
            super().stop(remove=remove)
        finally:
            self.net.down()
