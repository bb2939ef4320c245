"""Redis behind Sentinel (real redis-server primary, replica and three sentinels): the service's own client
finds the master from a `sentinel://` URL and the new one after the master is SIGKILLed. The broker side
(kombu's sentinel transport) is drilled under load by `python -m ops.chaos --drills sentinel`."""
from __future__ import annotations

import shutil
import time

import pytest

from ops.faults import SentinelCluster
from workers.wire import sentinel


def test_parse_sentinel_url():
    hosts, db, password = sentinel.parse("sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2;")
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26379)] and db == 2 and password == "s3cret"
    with pytest.raises(ValueError):
        sentinel.parse("redis://10.0.0.1:6379/0")


def test_client_follows_a_failover():
    import tempfile

    cluster = SentinelCluster(tempfile.mkdtemp(prefix="vla-sentinel-")).start()
    try:
        r = sentinel.master_client(cluster.url, cluster.MASTER, socket_timeout=5, socket_connect_timeout=1)
        r.set("k", "before")
        killed = cluster.kill_primary()
        t0, end = time.monotonic(), time.monotonic() + 30
        while time.monotonic() < end:
            try:
                r.set("k", "after")
                break
            except Exception:  # the old master is gone until the sentinels name the new one
                time.sleep(0.2)
        assert r.get("k") == b"after" and cluster.master_port() != killed
        assert time.monotonic() - t0 < 30
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
