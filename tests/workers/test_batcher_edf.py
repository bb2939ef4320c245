"""MicroBatcher with the deadline-aware schedule (workers/gpu/schedule.py), on the real tiny OpenVLA policy.

Items are queued before `start()` so the owner's first pick sees them all at once (see test_batcher.py).
"""
from __future__ import annotations

import time

import pytest

from tests.workers.conftest import RESULT_TIMEOUT_S
from tests.workers.test_batcher import make_obs
from workers.gpu.items import DeadlineExceeded
from workers.policies.base import Policy
from workers.wire.curve import Line


def test_earliest_deadline_first_and_tier_tie_break(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False, max_batch_size=1)
    now = time.monotonic()
    late = batcher.submit(make_obs(policy, 0), deadline=now + 60, job_id="late")
    soon = batcher.submit(make_obs(policy, 1), deadline=now + 30, job_id="soon")
    free = batcher.submit(make_obs(policy, 2), deadline=now + 30, job_id="free", tier_rank=2)
    pro = batcher.submit(make_obs(policy, 3), deadline=now + 30, job_id="pro", tier_rank=1)
    batcher.start()
    for f in (late, soon, free, pro):
        f.result(RESULT_TIMEOUT_S)
    order = sorted([late, soon, free, pro], key=lambda f: f.trace.batch_id)
    assert order == [soon, pro, free, late]


def test_fifo_keeps_arrival_order(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False, max_batch_size=1, schedule="fifo")
    now = time.monotonic()
    futures = [batcher.submit(make_obs(policy, i), deadline=now + 60 - i) for i in range(3)]
    batcher.start()
    for f in futures:
        f.result(RESULT_TIMEOUT_S)
    assert [f.trace.batch_id for f in futures] == sorted(f.trace.batch_id for f in futures)


def test_item_that_cannot_make_it_alone_is_ended_uncomputed_at_once(make_batcher, policy: Policy) -> None:
    # A prior curve says one pass takes 5 s: an item with 1 s left cannot make it, one with 60 s can.
    batcher = make_batcher(start=False, curve_prior=Line(5.0, 0.0))
    doomed = batcher.submit(make_obs(policy, 0), deadline=time.monotonic() + 1.0, job_id="doomed")
    fine = batcher.submit(make_obs(policy, 1), deadline=time.monotonic() + 60.0, job_id="fine")
    batcher.start()
    with pytest.raises(DeadlineExceeded, match="cannot make its deadline") as info:
        doomed.result(RESULT_TIMEOUT_S)
    assert info.value.reason and doomed.trace.started_at is None  # told before any pass, never computed
    assert fine.result(RESULT_TIMEOUT_S).actions.size > 0
    assert batcher.stats()["expired"] == 1


def test_curve_is_learned_from_passes_and_published(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(max_batch_size=4)
    for i in range(3):
        batcher.submit(make_obs(policy, i)).result(RESULT_TIMEOUT_S)
    stats = batcher.stats()
    assert stats["schedule"] == "edf" and stats["curve"]["max_batch"] == 4
    assert stats["curve"]["points_ms"]["1"] > 0 and batcher.curve.predict(1) > 0


def test_unknown_schedule_is_refused(make_batcher) -> None:
    with pytest.raises(ValueError, match="unknown schedule policy"):
        make_batcher(start=False, schedule="random")
