"""How replay work shares the model: the cadence hold, on synthetic clocks and on the real batcher."""
from __future__ import annotations

import time

import pytest

from tests.workers.conftest import RESULT_TIMEOUT_S
from tests.workers.test_batcher import make_obs
from workers.gpu.batcher import BACKGROUND
from workers.gpu.sharing import MIN_ARRIVALS, Cadence, Sharing


def steady(period: float, n: int, pass_s: float, start: float = 100.0) -> Cadence:
    c = Cadence()
    for k in range(n):
        c.arrival(start + k * period)
    c.background_pass(pass_s)
    return c


def test_holds_a_pass_that_would_overlap_the_next_request():
    c = steady(0.1, 6, 0.03)
    last = 100.0 + 5 * 0.1
    assert c.hold_until(last + 0.04) is None  # 0.04 + 0.03 ends well before 0.1: run
    until = c.hold_until(last + 0.08)  # would end at 0.11: wait for the request due at 0.1
    assert until == pytest.approx(last + 0.1, abs=0.005)
    assert c.hold_until(last + 0.2) is None  # overdue: the loop paused; never idle the model on it


def test_no_hold_without_a_cadence_to_protect():
    assert steady(0.1, MIN_ARRIVALS, 0.03).hold_until(100.0 + (MIN_ARRIVALS - 1) * 0.1 + 0.08) is None  # too few gaps
    c = Cadence()
    t = 100.0
    for gap in (0.05, 0.3, 0.07, 0.25, 0.04, 0.3):  # several clients at different rates: no period
        t += gap
        c.arrival(t)
    c.background_pass(0.01)
    assert not c.steady() and c.hold_until(t + 0.1) is None
    long_pass = steady(0.1, 6, 0.06)  # a pass longer than half the period: holding could starve the replay
    assert not long_pass.steady() and long_pass.hold_until(100.5 + 0.08) is None


def test_sharing_refuses_a_zero_cap():
    with pytest.raises(ValueError, match="background never runs"):
        Sharing(0, hold_for_cadence=True)


def _due_in(batcher, seconds: float, pass_s: float) -> None:
    """Give the batcher a steady 1 s control loop whose next request is due in `seconds`."""
    now = time.monotonic()
    cadence = batcher._sharing.cadence
    for k in range(6, 0, -1):
        cadence.arrival(now + seconds - k * 1.0)
    batcher._sharing.last_interactive = cadence.last
    cadence.background_pass(pass_s)


def test_replay_waits_for_the_due_request_then_runs(make_batcher, policy):
    batcher = make_batcher(max_batch_size=4, max_background_per_batch=1, hold_for_cadence=True)
    _due_in(batcher, 0.5, pass_s=0.5)
    replay = batcher.submit(make_obs(policy, 1), priority=BACKGROUND)
    time.sleep(0.15)
    interactive = batcher.submit(make_obs(policy, 2))
    interactive.result(RESULT_TIMEOUT_S)
    replay.result(RESULT_TIMEOUT_S)
    # The replay item was held, not run into the request's slot; the request ran at once (a submit wakes
    # the owner), with the replay item beside it as its capped share.
    assert replay.trace.picked_at >= interactive.trace.enqueued_at
    assert interactive.trace.picked_at - interactive.trace.enqueued_at < 0.1
    assert 0.1 < batcher.stats()["held_s"] < 0.6  # the hold is visible in the worker's stats


def test_replay_is_not_held_when_the_request_does_not_come(make_batcher, policy):
    batcher = make_batcher(max_batch_size=4, max_background_per_batch=1, hold_for_cadence=True)
    _due_in(batcher, 0.2, pass_s=0.3)
    replay = batcher.submit(make_obs(policy, 1), priority=BACKGROUND)
    replay.result(RESULT_TIMEOUT_S)
    waited = replay.trace.picked_at - replay.trace.enqueued_at
    assert 0.15 < waited < 0.6  # held until the request was due (plus its slack), then run anyway


def test_without_the_hold_replay_runs_at_once(make_batcher, policy):
    batcher = make_batcher(max_batch_size=4, max_background_per_batch=1)
    batcher.submit(make_obs(policy, 0)).result(RESULT_TIMEOUT_S)  # interactive traffic is about
    replay = batcher.submit(make_obs(policy, 1), priority=BACKGROUND)
    replay.result(RESULT_TIMEOUT_S)
    assert replay.trace.picked_at - replay.trace.enqueued_at < 0.1
