"""ChunkPlayer: a queue of actions, one per control tick, that never drops an unused action."""
from __future__ import annotations

import numpy as np
import pytest
from vlaapi_client import ChunkPlayer


def test_hands_out_actions_in_order_then_none():
    chunk = np.arange(12, dtype=float).reshape(4, 3)
    player = ChunkPlayer(horizon=3, refill_at=1)
    assert player.next() is None and player.needs_refill
    player.push(chunk)
    assert player.remaining == 3 and not player.needs_refill
    np.testing.assert_array_equal(player.next(), chunk[0])
    np.testing.assert_array_equal(player.next(), chunk[1])
    assert player.needs_refill  # one left: time to ask for the next chunk
    np.testing.assert_array_equal(player.next(), chunk[2])
    assert player.next() is None  # the horizon, not the chunk, ends it


def test_push_keeps_the_unused_actions():
    """The issue-24 bug: a one-action push replaced the action not yet played."""
    player = ChunkPlayer()
    player.push(np.zeros((3, 2)))
    player.next()
    player.push(np.ones(2))
    assert player.remaining == 3
    for expected in (np.zeros(2), np.zeros(2), np.ones(2)):
        np.testing.assert_array_equal(player.next(), expected)
    assert player.next() is None


def test_wants_more_only_when_the_queue_covers_less_than_the_latency():
    player = ChunkPlayer()
    assert player.wants_more(latency_s=0.05, period_s=0.2)  # empty
    player.push(np.zeros(7))
    assert not player.wants_more(latency_s=0.05, period_s=0.2)  # one action lasts longer than a request
    assert player.wants_more(latency_s=0.35, period_s=0.2)  # a request spans two ticks: keep two queued
    player.push(np.zeros(7))
    assert not player.wants_more(latency_s=0.35, period_s=0.2)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros((2, 2, 2))])
def test_rejects_non_chunks(bad):
    with pytest.raises(ValueError):
        ChunkPlayer().push(bad)


def test_switch_replaces_the_queue_less_what_was_played_since_the_request():
    old, new = np.arange(20, dtype=float).reshape(10, 2), -np.arange(20, dtype=float).reshape(10, 2)
    player = ChunkPlayer()
    player.switch(old, 0)
    for _ in range(3):
        player.next()
    prev, since = player.remainder()
    np.testing.assert_array_equal(prev, old[3:])  # what a real-time chunking request carries: next one first
    player.next(), player.next()  # two ticks pass while the request runs
    assert player.switch(new, since) == 2
    np.testing.assert_array_equal(player.next(), new[2])  # the new chunk's step 2 is the remainder's step 2
    tick, gap = player.switches[-1]
    assert tick == 5 and gap == np.abs(new[2] - old[5]).max()  # the old plan for that tick was old[5]


def test_switch_with_horizon_and_a_late_answer():
    player = ChunkPlayer(horizon=4)
    player.switch(np.zeros((10, 2)), 0)
    _, since = player.remainder()
    for _ in range(4):
        player.next()
    player.switch(np.ones((10, 2)), since)
    assert player.remaining == 0  # all four actions of the horizon were late: nothing left to play
    assert player.remainder() == (None, 4)
