"""ControlLoop with a real clock: a service of fixed latency, one action per answer (OpenVLA) or chunks (pi0).

The service here is a sleep of a known latency followed by an action, so that the pacing rule is measured
against time exactly as a robot lives it; the real service is driven by the example in
tests/integration/test_python_client.py.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from vlaapi_client.control import ControlLoop
from vlaapi_client.errors import DeadlineExceeded


def service(latency_s: float, chunk: int, deadlines: list[int] | None = None):
    def fetch(deadline_ms: int) -> np.ndarray:
        if deadlines is not None:
            deadlines.append(deadline_ms)
        time.sleep(latency_s)
        return np.zeros((chunk, 7))
    return fetch


@pytest.mark.parametrize("latency_s", [0.03, 0.12])
def test_one_action_answers_one_request_per_tick_none_starved(latency_s):
    """The issue-24 case at 5 Hz (2.3 requests per tick and 8-11 starved ticks of 50 before)."""
    deadlines: list[int] = []
    loop = ControlLoop(service(latency_s, 1, deadlines), hz=5)
    loop.warm_up(1000)  # as the example does: its action is the first tick's, its latency the first estimate
    stats = loop.run(4.0)
    assert stats["ticks"] == 20 and stats["starved"] == 0 and stats["on_time"] == 1.0
    assert stats["requests"] <= 1.05 * stats["ticks"], stats
    assert min(deadlines[1:]) >= 200  # never shorter than the time the queue lasts


def test_chunks_are_fetched_once_per_chunk_ahead_of_need():
    loop = ControlLoop(service(0.08, 8), hz=20)
    loop.warm_up(1000)
    stats = loop.run(2.0)
    assert stats["starved"] == 0
    assert stats["requests"] <= stats["ticks"] / 8 + 1, stats


def test_latency_over_a_period_keeps_two_queued():
    loop = ControlLoop(service(0.15, 1), hz=10)
    loop.warm_up(1000)
    stats = loop.run(2.0)
    # Only one request is in flight at a time, so a 150 ms service feeds at most 6.7 of 10 ticks a second;
    # what matters is that the fetcher does not pile up requests beyond what it can use.
    assert stats["requests"] <= stats["ticks"]


def test_errors_are_counted_and_do_not_stop_the_loop():
    calls = iter(range(1000))

    def flaky(deadline_ms: int) -> np.ndarray:
        if next(calls) % 2:
            raise DeadlineExceeded(504, {"title": "late"})
        time.sleep(0.01)
        return np.zeros((1, 7))

    stats = ControlLoop(flaky, hz=10).run(1.0)
    assert stats["requests"] > 0 and stats["ticks"] == 10


def test_rtc_mode_sends_the_remainder_and_the_delay_and_switches():
    """A 120 ms service at 20 Hz: a request spans 3 ticks (with the estimate's margin), so it carries the queued
    actions and an inference_delay of 3, and the answer replaces the queue less the ticks that passed."""
    sent: list[dict | None] = []

    def fetch(deadline_ms: int, rtc: dict | None) -> np.ndarray:
        sent.append(rtc)
        time.sleep(0.12)
        return np.tile(np.arange(20.0)[:, None], (1, 7)) + len(sent)

    loop = ControlLoop(fetch, hz=20, mode="rtc")
    loop.warm_up(1000)
    stats = loop.run(2.0)
    assert sent[0] is None and len(sent) >= 3
    for rtc in sent[1:]:
        prev = np.asarray(rtc["prev_actions"])
        assert prev.shape[1] == 7 and 1 <= len(prev) <= 2 * loop.latency_ticks() + 1
        assert 1 <= rtc["inference_delay"] <= len(prev)
    assert loop.delays and max(loop.delays) >= 2
    assert stats["starved"] <= 2  # the chunks overlap: asked one latency ahead


def test_modes_are_checked():
    with pytest.raises(ValueError):
        ControlLoop(service(0.01, 1), hz=5, mode="rtc-please")


def test_a_refusal_is_retried_after_its_advice_with_a_floor_that_doubles_while_refusals_last():
    from vlaapi_client.control import retry_wait_s

    assert retry_wait_s(None, 1) == 0.05 and retry_wait_s(0.12, 1) == 0.12  # the service's advice, to the ms
    assert retry_wait_s(0.01, 1) == 0.05  # never under the floor
    assert [retry_wait_s(0.01, n) for n in (2, 3, 4)] == [0.1, 0.2, 0.4]  # a pool that stays overloaded
    assert retry_wait_s(30.0, 1) == retry_wait_s(None, 12) == 1.0  # at most a second
