"""The web's answers under real backend faults, per door, and what an Idempotency-Key replay costs (issue 22).

    python -m ops.bench.web_faults [--rounds 30]

In process (the Flask app through its test client, the openpi server's own message handler), against a scratch
PostgreSQL database and a private redis-server (the web's Redis and the broker; no model worker is needed:
every request is refused or left queued). Drills, each `rounds` times per door (/v1/jobs, /v1/inference, /act,
websocket):
  oom         Redis at maxmemory (noeviction) from the start: the rate-limit script is refused.
  oom_late    Redis reaches maxmemory after the unit was counted: the in-flight slot and the refund fail too.
  pg_killed   the web's own PostgreSQL connection is terminated (pg_terminate_backend) just before the INSERT.
Each prints the status counts (target: every answer a 503, 0 other 5xx) and the latency of the answer.
Then: POST /v1/jobs with a fresh Idempotency-Key against a replay of the same key and body (one SELECT by the
unique index instead of admission, INSERT and publish). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ops import stack
from ops.bench.common import emit, machine, png_b64, summary_ms
from ops.faults import RedisServer

DOORS = ("/v1/jobs", "/v1/inference", "/act", "websocket")


def _setup(server_url: str, redis_url: str) -> tuple[str, str]:
    db_url = stack.ensure_database(server_url, "vlaapi_webfaults", recreate=True)
    os.environ.update(DATABASE_URL=db_url, REDIS_URL=redis_url, ENABLED_MODELS="openvla-tiny",
                      API_KEY_PEPPER="webfaults-pepper", LOG_LEVEL="CRITICAL")
    from workers.store.migrate import upgrade

    upgrade(db_url)
    from web.accounts import service
    from workers.store.db import session_scope

    with session_scope(db_url) as s:
        customer = service.create_customer(s, f"faults-{uuid.uuid4().hex[:6]}", "enterprise")
        _, key = service.create_key(s, customer, "webfaults-pepper")
    return db_url, key


def _body(seed: int = 0) -> dict:
    return {"model": "openvla-tiny", "image": png_b64(), "instruction": "pick up the block", "seed": seed,
            "robot_config": {"type": "widowx_250"}}


def _one(app, client, key: str, door: str) -> int:
    import json_numpy

    from web.compat.openpi import codec, session
    from web.compat.openpi.server import Limits, OpenpiServer

    auth = {"Authorization": f"Bearer {key}"}
    if door == "websocket":
        server = OpenpiServer(app, Limits(threads=1))
        conn = session.Connection(model="openvla-tiny", authorization=auth["Authorization"])
        obs = {"images": {"primary": np.zeros((64, 64, 3), dtype=np.uint8)}, "prompt": "pick"}
        try:
            frame = asyncio.run(server._serve_one(conn, codec.packb(obs)))
        finally:
            server.pool.shutdown()
        return int(frame.split(" ", 1)[0]) if isinstance(frame, str) else 200
    if door == "/act":
        body = json_numpy.dumps({"image": np.zeros((64, 64, 3), dtype=np.uint8), "instruction": "pick"})
        return client.post("/act", data=body, headers={**auth, "Content-Type": "application/json"}).status_code
    return client.post(door, json=_body(), headers=auth).status_code


def _drill(app, key: str, rounds: int, before_each) -> dict:
    client = app.test_client()
    out = {}
    for door in DOORS:
        statuses, lat = collections.Counter(), []
        for _ in range(rounds):
            before_each()
            t0 = time.perf_counter()
            statuses[_one(app, client, key, door)] += 1
            lat.append(time.perf_counter() - t0)
        out[door] = {"statuses": dict(statuses), **summary_ms(lat)}
    return out


def _idempotency(app, key: str, rounds: int) -> dict:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    new, replay = [], []
    for i in range(rounds):
        headers = {**auth, "Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
        for series in (new, replay):
            t0 = time.perf_counter()
            resp = client.post("/v1/jobs", json=_body(i), headers=headers)
            series.append(time.perf_counter() - t0)
            assert resp.status_code == 202, resp.get_json()
    return {"new_job": summary_ms(new), "replay": summary_ms(replay)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="webfaults-"))).start()
    pg_server = stack.ensure_postgres()
    db_url, key = _setup(pg_server, server.url)
    try:
        import redis
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        from web import db
        from web.app import create_app
        from web.services import admission, submit

        app = create_app({"TESTING": True})
        r = redis.Redis.from_url(server.url)
        result: dict = {"machine": machine(), "rounds": args.rounds}
        r.config_set("maxmemory", 1)
        result["oom"] = _drill(app, key, args.rounds, lambda: None)
        real_depth = admission.refuse_if_full

        def late_oom(*a, **kw):
            r.config_set("maxmemory", 1)
            return real_depth(*a, **kw)

        admission.refuse_if_full = late_oom
        result["oom_late"] = _drill(app, key, args.rounds, lambda: r.config_set("maxmemory", 0))
        admission.refuse_if_full = real_depth
        r.config_set("maxmemory", 0)
        admin = create_engine(make_url(db_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        real_prepare = submit.prepare

        def killed(*a, **kw):
            pid = db.session().connection().connection.dbapi_connection.get_backend_pid()
            with admin.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            return real_prepare(*a, **kw)

        submit.prepare = killed
        result["pg_killed"] = _drill(app, key, args.rounds, lambda: None)
        submit.prepare = real_prepare
        admin.dispose()
        result["idempotency_jobs"] = _idempotency(app, key, args.rounds)
        for drill in ("oom", "oom_late", "pg_killed"):
            print(drill, json.dumps(result[drill]))
        print("idempotency", json.dumps(result["idempotency_jobs"]))
        emit(result)
    finally:
        server.stop()
        from workers.store.db import dispose_all

        dispose_all()
        stack.drop_database(pg_server, db_url)


if __name__ == "__main__":
    main()
