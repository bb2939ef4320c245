"""Charge first, then work: a job is counted (rate, quota, in-flight) before its images are looked at, and a
request refused after the count gets its unit back."""
from __future__ import annotations

import base64
import uuid

import pytest

from tests.helpers import request_body
from workers.store.db import session_scope
from workers.store.models import Tier

NOT_AN_IMAGE = base64.b64encode(b"not an image at all" * 10).decode()


@pytest.fixture()
def headers(settings, make_customer):
    name = f"cf-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.database_url) as s:
        s.add(Tier(name=name, requests_per_minute=2, requests_per_day=100, requests_per_month=1000,
                   max_in_flight=10))
    return make_customer(name)[2]


def _minute(client, headers) -> int:
    return client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"]


def test_a_refused_image_costs_nothing(client, headers):
    for _ in range(3):  # more than the minute's 2: each refusal was refunded
        resp = client.post("/v1/jobs", json=request_body(model="openvla-slow", image=NOT_AN_IMAGE), headers=headers)
        assert resp.status_code == 422 and resp.get_json()["field"] == "image"
    assert _minute(client, headers) == 0


def test_over_the_limit_no_image_is_looked_at(client, headers):
    for _ in range(2):
        assert client.post("/v1/jobs", json=request_body(model="openvla-slow"), headers=headers).status_code == 202
    resp = client.post("/v1/jobs", json=request_body(model="openvla-slow", image=NOT_AN_IMAGE), headers=headers)
    assert resp.status_code == 429  # counted and refused before the image was read
