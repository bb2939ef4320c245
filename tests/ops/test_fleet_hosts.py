"""One model's GPU workers on two hosts (network namespaces, each with its own links to Redis and PostgreSQL)
share its queue: both serve a burst of requests, and every answer is the real stack's (ops/bench/fleet_hosts.py)."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from ops.bench.fleet_doors import RestDoor
from ops.bench.fleet_hosts import Hosts, HostsStack, available
from ops.bench.fleet_stack import OPENVLA, customers
from workers.policies.sim import PRESETS
from workers.wire import notify

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture()
def own_environment():
    """customers() points this process's environment and settings at the hosts' servers, as the bench wants;
    the tests after this one must get theirs back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    from workers.settings import reload_settings

    reload_settings()


def test_two_gpu_hosts_share_one_models_queue(own_environment):
    with Hosts(2, scale=1.0) as hosts:
        key = customers(hosts.env)[0]
        with HostsStack(hosts, workers=2, baseline=False, model=OPENVLA) as st:
            web, gpu_a, gpu_b, safety = st.procs
            assert len({_netns(p.pid) for p in (web, gpu_a, gpu_b, safety)} | {_netns(os.getpid())}) == 5
            assert not st.url.startswith("http://127.0.0.1")  # the robots reach the web host over its link
            doors = [RestDoor(st.url, key, OPENVLA, PRESETS["openvla"][3], None, i) for i in range(8)]
            with ThreadPoolExecutor(8) as pool:
                answers = [a for _ in range(3) for a in pool.map(lambda d: d.send(5000), doors)]
            assert [a.status for a in answers] == [200] * len(answers), [a.error for a in answers]
            r, served, end = redis.Redis.from_url(hosts.env["REDIS_URL"]), {}, time.monotonic() + 15
            while time.monotonic() < end:  # the counts arrive with each worker's next heartbeat
                served = {b["hostname"]: (b.get("stats") or {}).get("items", 0)
                          for b in notify.read_heartbeats(r, OPENVLA)}
                if len(served) == 2 and all(n > 0 for n in served.values()):
                    break
                time.sleep(0.5)
            assert len(served) == 2 and all(n > 0 for n in served.values()), served
