"""ChunkPlayer: one action per control tick, in order, with an open-loop horizon and a refill threshold."""
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


def test_push_replaces_the_rest_and_single_actions_work():
    player = ChunkPlayer()
    player.push(np.zeros((5, 2)))
    player.next()
    player.push(np.ones(2))
    assert player.remaining == 1
    np.testing.assert_array_equal(player.next(), np.ones(2))


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros((2, 2, 2))])
def test_rejects_non_chunks(bad):
    with pytest.raises(ValueError):
        ChunkPlayer().push(bad)
