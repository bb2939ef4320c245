"""Tiers, rate limits, quotas, in-flight and queue caps, usage, isolation and idempotency over HTTP.

No GPU worker serves `openvla-slow` here, so admitted jobs stay queued; the queue is emptied after each test.
"""
from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import request_body
from web.accounts import service
from workers.store.db import session_scope
from workers.store.models import Tier
from workers.wire.queues import infer_queue

MODEL = "openvla-slow"


@pytest.fixture(autouse=True)
def _empty_queue(redis_client):
    yield
    for key in redis_client.scan_iter(match=f"{infer_queue(MODEL)}*"):
        redis_client.delete(key)


@pytest.fixture()
def tier_customer(settings):
    """Factory: a customer on a fresh tier with the given limits."""

    def make(per_minute=None, per_day=None, per_month=None, max_in_flight=None):
        tier = f"t-{uuid.uuid4().hex[:8]}"
        with session_scope(settings.database_url) as s:
            s.add(Tier(name=tier, requests_per_minute=per_minute, requests_per_day=per_day,
                       requests_per_month=per_month, max_in_flight=max_in_flight))
            s.flush()
            customer = service.create_customer(s, f"c-{tier}", tier)
            _, key = service.create_key(s, customer, settings.api_key_pepper)
        return {"Authorization": f"Bearer {key}"}

    return make


def test_fifty_concurrent_clients_get_exactly_ten(app, tier_customer):
    headers = tier_customer(per_minute=10)
    body = request_body(MODEL)

    def call(_):
        with app.test_client() as c:
            r = c.post("/v1/jobs", json=body, headers=headers)
            return r.status_code, dict(r.headers)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(call, range(50)))
    codes = [c for c, _ in results]
    assert codes.count(202) == 10 and codes.count(429) == 40
    refused = next(h for c, h in results if c == 429)
    assert int(refused["Retry-After"]) >= 1
    assert '"minute";q=10;w=60' in refused["RateLimit-Policy"]
    assert refused["RateLimit"].startswith('"minute";r=0;')


def test_month_quota_is_its_own_error(client, tier_customer):
    headers = tier_customer(per_month=2)
    assert [client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code
            for _ in range(2)] == [202, 202]
    resp = client.post("/v1/jobs", json=request_body(MODEL), headers=headers)
    assert resp.status_code == 429
    body = resp.get_json()
    assert body["type"].endswith("quota_exceeded") and body["usage"]["remaining_month"] == 0


def test_every_response_carries_usage(client, tier_customer):
    headers = tier_customer(per_minute=100, per_day=1000, per_month=10000)
    resp = client.post("/v1/jobs", json=request_body(MODEL), headers=headers)
    assert resp.get_json()["usage"]["requests_this_minute"] == 1
    listing = client.get("/v1/jobs", headers=headers)
    assert "RateLimit" in listing.headers and "RateLimit-Policy" in listing.headers
    usage = client.get("/v1/usage", headers=headers).get_json()
    assert usage["requests_today"] == 1 and usage["remaining_day"] == 999 and usage["remaining_month"] == 9999


def test_in_flight_cap_refuses_and_refunds(client, tier_customer):
    headers = tier_customer(per_minute=100, max_in_flight=2)
    codes = [client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 2


def test_cancel_frees_an_in_flight_slot(client, tier_customer):
    headers = tier_customer(per_minute=100, max_in_flight=1)
    job = client.post("/v1/jobs", json=request_body(MODEL), headers=headers).get_json()
    assert client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code == 429
    assert client.delete(f"/v1/jobs/{job['id']}", headers=headers).status_code == 200
    assert client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code == 202


def test_queue_depth_limit_is_503_with_retry_after(app, settings, tier_customer):
    from web.app import create_app

    small = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, max_queue_depth=2)})
    headers = tier_customer(per_minute=100)
    with small.test_client() as c:
        codes = [c.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code for _ in range(3)]
        assert codes == [202, 202, 503]
        resp = c.post("/v1/jobs", json=request_body(MODEL), headers=headers)
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert c.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 2


def test_tenant_isolation_is_404(client, make_customer):
    a, b = make_customer()[2], make_customer()[2]
    job = client.post("/v1/jobs", json=request_body(MODEL), headers=a).get_json()
    for method, path in (("get", ""), ("get", "/wait?timeout=0"), ("delete", "")):
        resp = getattr(client, method)(f"/v1/jobs/{job['id']}{path}", headers=b)
        assert resp.status_code == 404, (method, path)
    assert client.get("/v1/jobs", headers=b).get_json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=a).status_code == 200


def test_idempotency_key(client, make_customer):
    headers = make_customer()[2]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/jobs", json=request_body(MODEL), headers={**headers, **key})
    again = client.post("/v1/jobs", json=request_body(MODEL), headers={**headers, **key})
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    other = client.post("/v1/jobs", json=request_body(MODEL, instruction="something else"), headers={**headers, **key})
    assert other.status_code == 422 and other.get_json()["type"].endswith("idempotency_key_reused")
    assert len(client.get("/v1/jobs", headers=headers).get_json()["items"]) == 1


def test_idempotency_key_under_concurrency(app, make_customer):
    headers = {**make_customer()[2], "Idempotency-Key": "same-key"}
    body = request_body(MODEL)

    def call(_):
        with app.test_client() as c:
            r = c.post("/v1/jobs", json=body, headers=headers)
            return r.status_code, r.get_json().get("id")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert {c for c, _ in results} == {202}
    assert len({jid for _, jid in results}) == 1


def test_cors_allows_configured_origin_only(settings, make_customer):
    from web.app import create_app

    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, cors_origins=["https://lab.example"])})
    headers = make_customer()[2]
    with app.test_client() as c:
        ok = c.get("/v1/usage", headers={**headers, "Origin": "https://lab.example"})
        assert ok.headers["Access-Control-Allow-Origin"] == "https://lab.example"
        bad = c.get("/v1/usage", headers={**headers, "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in bad.headers
        pre = c.options("/v1/jobs", headers={"Origin": "https://lab.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]


def test_admission_after_redis_lost_its_scripts_charges_once(client, tier_customer, redis_client):
    """The charge goes out by EVALSHA with the queue's reads in one round trip (web/ratelimit/round_trip.py);
    after SCRIPT FLUSH (as after a Redis restart) the scripts are loaded again and the request is charged once."""
    headers = tier_customer(per_minute=5, max_in_flight=3)
    redis_client.script_flush()
    assert client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code == 202
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 1
    redis_client.script_flush()
    assert client.post("/v1/jobs", json=request_body(MODEL), headers=headers).status_code == 202
    usage = client.get("/v1/usage", headers=headers).get_json()
    assert usage["requests_this_minute"] == 2


def test_the_openpi_look_before_decoding_after_redis_lost_its_scripts(app, tier_customer, redis_client):
    """The door's look (the limits and the in-flight count, one round trip) survives SCRIPT FLUSH too."""
    from web.compat.openpi import session

    headers = tier_customer(per_minute=5, max_in_flight=3)
    conn = session.Connection(model=MODEL, authorization=headers["Authorization"])
    redis_client.script_flush()
    session.precheck(app, conn)  # no exception: allowed, nothing consumed
    with app.test_client() as c:
        assert c.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0
