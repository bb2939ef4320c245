"""Several GPU hosts for the fleet benchmark: the same stack spread over network namespaces (ops/chaos_net.py),
so one model's GPU workers share its queue from different hosts, as they would on several machines.

    db host      redis-server and PostgreSQL of their own, each on its own bridge
    web host     gunicorn (and the openpi door), listening on its front link
    safety host  the safety worker
    GPU hosts    `gpu`, `gpb`, ...: the model's sim GPU workers, dealt out in turn
    this process the robots (the drill host: its front link to the web host, its links to Redis and PostgreSQL
                 for the customers' keys and the workers' heartbeats)

Every process reaches Redis and PostgreSQL only through its host's veth links, never over loopback. Needs root
(`ip netns`); `available()` says why not otherwise.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ops.bench.common import spawn
from ops.bench.fleet_stack import LOGS, OPENVLA, Stack, fleet_env
from ops.chaos_net import GPU_HOSTS, Net, available
from ops.faults import PostgresServer, RedisServer

__all__ = ["Hosts", "HostsStack", "available"]


class Hosts:
    """The namespaces and the db host's servers; a context manager. `env` is the stack's environment."""

    def __init__(self, gpu_hosts: int, scale: float):
        if not 1 <= gpu_hosts <= len(GPU_HOSTS):
            raise ValueError(f"1 to {len(GPU_HOSTS)} GPU hosts")
        self.gpu = GPU_HOSTS[:gpu_hosts]
        self.net = Net(hosts=("web", "safety", *self.gpu))
        self.scale, self.env = scale, {}
        self.dir = Path(tempfile.mkdtemp(prefix="vla-fleet-hosts-"))
        self.dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root, and must reach its folder
        self.redis: RedisServer | None = None
        self.pg: PostgresServer | None = None

    def __enter__(self) -> Hosts:
        try:
            self.net.up()
            db = self.net.ns("db")
            self.redis = RedisServer(self.dir / "redis", 6379, host=self.net.addr("db", "redis"), netns=db).start()
            self.pg = PostgresServer(self.dir / "pg", 5432, host=self.net.addr("db", "postgres"), netns=db)
            self.pg.init().start()
            db_url = self.pg.create_database("vlaapi_fleet")
            from workers.store.migrate import upgrade

            upgrade(db_url)
            self.env = fleet_env(db_url, self.redis.url, self.scale)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.pg, self.redis):
            if server is not None:
                server.stop()
        self.net.down()
        shutil.rmtree(self.dir, ignore_errors=True)


class HostsStack(Stack):
    """Stack with each process on its host: the web and door on `web`, GPU worker i on GPU host i mod n."""

    def __init__(self, hosts: Hosts, workers: int, baseline: bool, model: str = OPENVLA, openpi: bool = False):
        super().__init__(hosts.env, workers, baseline, model=model, openpi=openpi)
        self.hosts = hosts
        self.bind = hosts.net.addr("web", "front")

    def _spawn(self, role: str, index: int, argv: list[str], env: dict[str, str], log: str):
        host = self.hosts.gpu[index % len(self.hosts.gpu)] if role == "gpu" else role
        return spawn(argv, env, LOGS / log, netns=self.hosts.net.ns(host))
