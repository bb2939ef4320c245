"""The pure batch-formation rule (workers/gpu/schedule.py) and the learned curve (workers/wire/curve.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.gpu.schedule import plan
from workers.wire.curve import LatencyCurve, Line, expected_service_s

H100_OPENVLA = Line.through(1, 0.090, 8, 0.128)  # docs/benchmarks.md "Fleet": the CUDA-graphed decode figures


@dataclass
class Item:
    seq: int
    deadline: float | None
    priority: int = 0
    tier_rank: int = 0


def curve(line: Line = H100_OPENVLA, max_batch: int = 8) -> LatencyCurve:
    return LatencyCurve(max_batch, prior=line)


def test_earliest_deadline_first_interactive_before_replay_tier_breaks_ties() -> None:
    items = [Item(0, 5.0), Item(1, 2.0), Item(2, 1.0, priority=1), Item(3, 2.0, tier_rank=-1), Item(4, None)]
    p = plan(items, 0.0, curve(), 8)
    assert [i.seq for i in p.run] == [3, 1, 0, 4, 2] and not p.expired


def test_fifo_is_the_old_batcher() -> None:
    items = [Item(0, 5.0), Item(1, 0.05), Item(2, -1.0), Item(3, 0.2, priority=1)]
    p = plan(items, 0.0, curve(), 8, policy="fifo")
    assert [i.seq for i in p.run] == [0, 1, 3]  # item 1 cannot make it, but FIFO computes it anyway
    assert [i.seq for i, _ in p.expired] == [2]


def test_an_item_that_cannot_make_it_alone_is_ended_with_the_reason() -> None:
    p = plan([Item(0, 0.05), Item(1, 1.0)], 0.0, curve(), 8)
    assert [i.seq for i in p.run] == [1]
    ((item, why),) = p.expired
    assert item.seq == 0 and "cannot make its deadline" in why and "90.0 ms" in why


def test_batch_size_keeps_the_earliest_deadline() -> None:
    # latency(n) = 84.6 + 5.4 n ms: a deadline at 0.105 s allows 3 items, not 4; the rest fit the next pass
    items = [Item(i, 0.105 if i == 0 else 1.0) for i in range(6)]
    p = plan(items, 0.0, curve(), 8)
    assert p.run[0].seq == 0 and p.expected_s <= 0.105 and len(p.run) <= 3
    assert len(p.run) + len(p.rest) == 6 and not p.expired


def test_a_short_pass_for_an_urgent_item_when_the_rest_fit_after_it() -> None:
    urgent, rest = Item(0, 0.095), [Item(i, 0.300) for i in range(1, 8)]
    p = plan([urgent, *rest], 0.0, curve(), 8)
    assert [i.seq for i in p.run] == [0] and len(p.rest) == 7  # 90 ms, then 7 items by ~213 ms: all on time


def test_an_urgent_item_is_given_up_when_serving_it_costs_more_on_time_items() -> None:
    urgent, rest = Item(0, 0.095), [Item(i, 0.200) for i in range(1, 9)]
    p = plan([urgent, *rest], 0.0, curve(), 8)
    # serving the urgent item alone first would leave 8 items finishing at ~218 ms, all late
    assert len(p.run) == 8 and 0 not in [i.seq for i in p.run] and [i.seq for i, _ in p.expired] == [0]


def test_waiting_items_that_cannot_follow_this_pass_are_ended_now() -> None:
    items = [Item(i, 0.15) for i in range(10)]  # 8 fit this pass; the 2 left would finish at ~0.22 s
    p = plan(items, 0.0, curve(), 8)
    assert len(p.run) == 8 and len(p.expired) == 2 and not p.rest
    assert all("queue ahead" in why for _, why in p.expired)


def test_background_cap() -> None:
    items = [Item(i, None, priority=1) for i in range(4)] + [Item(9, None)]
    p = plan(items, 0.0, curve(), 8, max_background=1)
    assert [i.seq for i in p.run] == [9, 0] and len(p.rest) == 3


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown schedule policy"):
        plan([], 0.0, curve(), 8, policy="lifo")


items_st = st.lists(st.builds(Item, seq=st.integers(0, 10_000),
                              deadline=st.one_of(st.none(), st.floats(-0.5, 2.0)),
                              priority=st.integers(0, 1), tier_rank=st.integers(0, 2)),
                    max_size=40, unique_by=lambda i: i.seq)


@settings(max_examples=300, deadline=None)
@given(items=items_st, now=st.floats(0, 1), max_batch=st.integers(1, 16),
       a=st.floats(0, 0.2), b=st.floats(0, 0.02), cap=st.one_of(st.none(), st.integers(1, 4)))
def test_plan_properties(items, now, max_batch, a, b, cap) -> None:
    c = LatencyCurve(max_batch, prior=Line(a, b))
    p = plan(items, now, c, max_batch, max_background=cap)
    seen = [i.seq for i in p.run] + [i.seq for i, _ in p.expired] + [i.seq for i in p.rest]
    assert sorted(seen) == sorted(i.seq for i in items)  # every item exactly once
    assert len(p.run) <= max_batch
    assert cap is None or sum(i.priority > 0 for i in p.run) <= cap
    finish = now + c.predict(len(p.run))
    assert all(i.deadline is None or i.deadline >= finish for i in p.run)  # every item run is on time
    for item, _ in p.expired:  # nothing ended that could have run alone right now
        assert item.deadline is not None and item.deadline <= now + c.predict(1) + p.expected_s
    if any(i.deadline is None or i.deadline > now + c.predict(1) for i in items):
        assert p.run  # something that can make it always runs


def test_curve_learns_from_passes_and_round_trips() -> None:
    c = LatencyCurve(8)
    assert c.predict(4) == 0.0 and not c.known
    for _ in range(5):
        c.observe(1, 0.090)
        c.observe(8, 0.128)
    assert c.predict(1) == pytest.approx(0.090) and c.predict(8) == pytest.approx(0.128)
    assert c.predict(4) == pytest.approx(0.090 + 3 * 0.038 / 7, rel=1e-6)
    back = LatencyCurve.from_dict(c.to_dict())
    assert back.predict(4) == pytest.approx(c.predict(4), rel=1e-3)


def test_curve_is_monotone_under_noise() -> None:
    c = LatencyCurve(8)
    for _ in range(3):
        c.observe(2, 0.100)
        c.observe(3, 0.080)  # noise: a bigger batch measured faster
    assert c.predict(3) >= c.predict(2)


def test_expected_service() -> None:
    c = curve()
    assert expected_service_s(0, 1, c) == pytest.approx(c.predict(1))  # idle: one pass of one
    assert expected_service_s(8, 1, c) == pytest.approx(0.5 * c.predict(8) + c.predict(1))
    assert expected_service_s(15, 1, c) == pytest.approx(0.5 * c.predict(8) + c.predict(8))
    assert expected_service_s(24, 1, c) == pytest.approx(0.5 * c.predict(8) + 2 * c.predict(8) + c.predict(1))
    assert expected_service_s(15, 4, c) == pytest.approx(0.5 * c.predict(4) + c.predict(1))
    assert expected_service_s(3, 0, c) == float("inf")


def test_verdict_leaves_deadlines_no_idle_pool_could_meet_to_the_scheduler() -> None:
    from workers.wire.backlog import verdict

    beats = [{"state": "ready", "stats": {"curve": curve().to_dict()}}]
    assert verdict(0, beats, 1.0) is None  # 1 ms: never attainable; 504 from the scheduler, not 503
    assert verdict(0, [{"state": "ready", "stats": {}}], 300.0) is None  # no curve yet: no guess
    v = verdict(30, beats, 300.0)
    assert v is not None and not v.attainable and v.retry_after_ms > 0
    assert verdict(0, beats, 300.0).attainable
