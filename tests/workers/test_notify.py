"""Wake-up tokens against real Redis: a waiter gets the worker's settled row and leaves a bare state behind."""
from __future__ import annotations

import uuid

from workers.wire import notify


def test_an_outcome_token_reaches_one_waiter_and_the_rest_get_the_bare_state(redis_client):
    job_id = str(uuid.uuid4())
    settled = {"state": "succeeded", "result": {"action": {"values": [0.1] * 7}}, "attempts": 1}
    notify.ended(redis_client, job_id, "succeeded", None, settled)
    first = notify.wait_done(redis_client, job_id, 1.0)
    assert notify.outcome(first) == settled
    # the bare state was pushed with it: the first waiter answers without a round trip to put anything back
    assert redis_client.lrange(notify.done_key(job_id), 0, -1) == [b"succeeded"]
    second = notify.wait_done(redis_client, job_id, 1.0)  # another waiter: the state only, it reads the row
    assert second == "succeeded" and notify.outcome(second) is None
    assert redis_client.lrange(notify.done_key(job_id), 0, -1) == [b"succeeded"]
    assert 0 < redis_client.ttl(notify.done_key(job_id)) <= notify.DONE_TTL_S


def test_a_bare_token_is_put_back_as_it_was_and_a_timeout_is_none(redis_client):
    job_id = str(uuid.uuid4())
    assert notify.wait_done(redis_client, job_id, 0.1) is None
    notify.ended(redis_client, job_id, "canceled", None)
    assert notify.wait_done(redis_client, job_id, 1.0) == "canceled"
    assert redis_client.lrange(notify.done_key(job_id), 0, -1) == [b"canceled"]
