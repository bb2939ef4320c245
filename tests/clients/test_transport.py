"""What the client retries when the service cannot be reached: idempotent calls only."""
from __future__ import annotations

import numpy as np
import pytest
from vlaapi_client import Unavailable, VLAClient

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
