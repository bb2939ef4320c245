"""What the client retries when the service cannot be reached (idempotent calls only), and after how long."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from vlaapi_client import Unavailable, VLAClient
from vlaapi_client.transport import error_of

from tests.integration.live import free_port

IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


@pytest.fixture()
def nowhere():
    return VLAClient(f"http://127.0.0.1:{free_port()}", "vla_live_x", model="m", max_retries=2, timeout=2)


def test_submission_with_idempotency_key_is_retried(nowhere):
    with pytest.raises(Unavailable) as exc:
        nowhere.submit(IMAGE, "x")
    assert exc.value.status == 0 and "cannot reach" in str(exc.value) and nowhere.http.retries == 2


def test_act_with_its_idempotency_key_is_retried(nowhere):
    """POST /v1/inference takes an Idempotency-Key: act sends one per call, so a retry after a lost connection
    answers the first request's job instead of running a second."""
    with pytest.raises(Unavailable):
        nowhere.act(IMAGE, "x")
    assert nowhere.http.retries == 2


def _answer(status: int, problem: dict, retry_after: str | None) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content = status, json.dumps(problem).encode()
    resp.headers["Content-Type"] = "application/problem+json"
    if retry_after is not None:
        resp.headers["Retry-After"] = retry_after
    return resp


def test_a_fail_fast_answer_is_retried_after_its_milliseconds_not_the_whole_second_of_its_header():
    """Retry-After is whole seconds (at least 1); a 503 deadline_unattainable also says retry_after_ms, which a
    50 Hz control loop must not round up to 50 ticks."""
    problem = {"type": "https://vlaapi.dev/problems/deadline_unattainable", "status": 503, "retry_after_ms": 120}
    err = error_of(_answer(503, problem, "1"))
    assert err.code == "deadline_unattainable" and err.retry_after == pytest.approx(0.12)
    assert error_of(_answer(429, {"type": "x/rate_limited", "status": 429}, "7")).retry_after == 7.0
    assert error_of(_answer(503, {**problem, "retry_after_ms": "soon"}, "2")).retry_after == 2.0
