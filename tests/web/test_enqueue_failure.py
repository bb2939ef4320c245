"""A broker that refuses the publish: the job is a 503 with Retry-After, and nothing is left behind (no row,
no usage unit, no in-flight slot). The refusal is injected at the publish call; the rest is real."""
from __future__ import annotations

import uuid

import kombu.exceptions
from sqlalchemy import func, select

from tests.helpers import request_body
from web.accounts import service
from web.services import submit
from workers.store.db import session_scope
from workers.store.models import Job, Tier


def _refuse(*_args, **_kwargs):
    raise kombu.exceptions.OperationalError("broker refused the publish")


def test_a_refused_publish_leaves_no_row_no_unit_and_no_slot(client, settings, db_session, monkeypatch):
    tier = f"t-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.database_url) as s:
        s.add(Tier(name=tier, requests_per_minute=100, max_in_flight=1))
        s.flush()
        customer = service.create_customer(s, f"c-{tier}", tier)
        _, key = service.create_key(s, customer, settings.api_key_pepper)
    headers = {"Authorization": f"Bearer {key}"}
    count = db_session.execute(select(func.count()).select_from(Job).where(Job.customer_id == customer.id))
    assert count.scalar_one() == 0
    monkeypatch.setattr(submit, "send_job", _refuse)
    for path in ("/v1/jobs", "/v1/inference", "/v1/jobs"):
        resp = client.post(path, json=request_body(), headers=headers)
        assert resp.status_code == 503, resp.get_json()
        assert resp.get_json()["type"].endswith("queue_unavailable") and resp.headers["Retry-After"]
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0  # refunded
    db_session.expire_all()
    count = db_session.execute(select(func.count()).select_from(Job).where(Job.customer_id == customer.id))
    assert count.scalar_one() == 0  # no row left behind
    monkeypatch.undo()
    # The one in-flight slot was released each time: with the broker back, the next job is accepted.
    resp = client.post("/v1/jobs", json=request_body(), headers=headers)
    assert resp.status_code == 202, resp.get_json()
