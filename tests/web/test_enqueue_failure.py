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
from workers.wire.backlog import backlog_key


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



def test_the_backlog_counts_a_job_before_its_message_exists_and_forgets_one_never_sent(
        client, settings, make_customer, redis_client, monkeypatch):
    """Fail-fast admission counts an interactive job in its model's backlog in the round trip that stores its
    images, before the publish: the worker's removal (after inference) can never come first and leave the entry
    counted until its deadline. A job whose publish is refused leaves no entry behind."""
    assert settings.admission_fail_fast
    _, _, headers = make_customer("pro")
    seen = {}

    def publish_refused(payload, _safety_job):
        seen[payload["job_id"]] = redis_client.zscore(backlog_key(payload["model"]), payload["job_id"])
        _refuse()

    monkeypatch.setattr(submit, "send_job", publish_refused)
    resp = client.post("/v1/jobs", json=request_body(), headers=headers)
    assert resp.status_code == 503, resp.get_json()
    [(job_id, score)] = seen.items()
    assert score is not None  # counted, with its deadline, before its message was published
    assert redis_client.zscore(backlog_key("openvla-tiny"), job_id) is None  # never sent: not counted
