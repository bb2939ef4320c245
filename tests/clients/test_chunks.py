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
