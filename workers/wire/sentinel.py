"""Redis behind Sentinel: `REDIS_URL=sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0` and
`REDIS_SENTINEL_MASTER` (the monitored name, `mymaster` by default).

It is the URL form Celery's broker takes as it is (kombu's sentinel transport, with `master_name` in
celeryconfig's transport options); the web's and the workers' own Redis clients (rate limits, wake-ups,
heartbeats: workers/wire/notify.py) get the same master from the same sentinels here, and find the new one
after a failover (redis-py's SentinelConnectionPool asks again when a connection fails).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

PREFIX = "sentinel://"


def is_sentinel(url: str) -> bool:
    return url.startswith(PREFIX)


def parse(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The sentinels' (host, port), the database number and the password of a `sentinel://...;...` URL."""
    hosts, db, password = [], 0, None
    for part in url.split(";"):
        part = part.strip()
        if not part:
            continue
        u = urlsplit(part)
        if u.scheme != "sentinel" or not u.hostname:
            raise ValueError(f"not a sentinel URL: {part!r}")
        hosts.append((u.hostname, u.port or 26379))
        if u.path.strip("/"):
            db = int(u.path.strip("/"))
        if u.password:
            password = unquote(u.password)
    return hosts, db, password


def master_client(url: str, master_name: str, **kwargs: Any) -> redis.Redis:
    """A client of the current master; after a failover its pool asks the sentinels for the new one."""
    hosts, db, password = parse(url)
    timeout = kwargs.get("socket_connect_timeout") or 1.0
    sentinels = Sentinel(hosts, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout})
    kwargs.pop("health_check_interval", None)  # SentinelConnectionPool checks the master's role itself
    return sentinels.master_for(master_name, db=db, password=password, **kwargs)
