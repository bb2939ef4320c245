"""The fleet simulator (ops/bench/fleet_des.py): chunk robots follow the client's ControlLoop, the chunk mode's
outcomes on small fleets whose answer is known, and overheads drawn from measured samples. Correctness, not
timing: no wall clock is involved."""
from __future__ import annotations

import numpy as np
import pytest
from vlaapi_client.control import ControlLoop, retry_wait_s

from ops.bench.fleet_des import PI0_ROBOTS, Fleet, Sim, capacity_robots_per_gpu, simulate
from ops.bench.fleet_des_robots import ChunkRobot
from workers.wire.curve import Line

IDLE = {"jitter": 0.0, "overhead_s": 0.0, "warmup_s": 1.0, "duration_s": 4.0}


def chunk_robot(transport: str = "rest", **kw) -> ChunkRobot:
    return ChunkRobot(0, Fleet(robots=1, **{**PI0_ROBOTS, **kw}), transport)


@pytest.mark.parametrize("latencies_ms", [[], [120.0], [80.0, 300.0, 95.0, 110.0] * 20])
@pytest.mark.parametrize("queued", [0, 3, 25])
def test_chunk_robot_asks_as_control_loop_does(latencies_ms, queued) -> None:
    """The same latencies and queue: the same expected latency, decision to ask, and deadline (append mode)."""
    asked: list[int] = []
    loop = ControlLoop(lambda deadline_ms: asked.append(deadline_ms) or np.zeros((50, 7)), 50.0, horizon=25,
                       min_deadline_ms=300)
    robot = chunk_robot()
    for ms in latencies_ms:
        loop._recent.append(ms)  # what fetch_once records per answer
        robot.recent.append(ms)
    robot.expected_s = robot.expected_latency_s()
    if queued:
        loop.player.push(np.zeros((queued, 7)))
        robot.player.push(np.zeros((queued, 7)))
    assert robot.expected_latency_s() == pytest.approx(loop.expected_latency_s())
    assert robot.player.wants_more(robot.expected_s, robot.period) == loop.wants_more()
    loop.fetch_once()
    assert asked == [robot.deadline_ms()]


def test_openpi_chunk_robot_carries_the_connection_deadline() -> None:
    rest, openpi = chunk_robot("rest", deadline_s=0.3), chunk_robot("openpi", deadline_s=0.3)
    for robot in (rest, openpi):
        robot.player.push(np.zeros((50, 7)))  # 25 queued: they last 520 ms
    assert rest.deadline_ms() == 520 and openpi.deadline_ms() == 300


def test_retry_waits_as_the_client_does() -> None:
    """ControlLoop's sleep after a refusal (retry_wait_s): the problem's retry_after_ms on both transports, never
    under a floor that doubles with each refusal in a row (50 ms, 100 ms, ...), at most 1 s."""
    rest, openpi = chunk_robot("rest"), chunk_robot("openpi")
    for robot in (rest, openpi):
        robot.refusals = 1
    assert rest.retry_s(None) == openpi.retry_s(None) == 0.05 == retry_wait_s(None, 1)
    assert rest.retry_s(120.0) == pytest.approx(0.12) == openpi.retry_s(120.0)
    assert openpi.retry_s(4000.0) == 1.0
    rest.refusals = 4  # a fourth in a row: at least 400 ms, whatever the advice
    assert rest.retry_s(120.0) == pytest.approx(0.4) == retry_wait_s(0.12, 4)
    assert retry_wait_s(0.01, 30) == 1.0


def test_capacity_counts_a_chunk_robot_once_per_horizon() -> None:
    # batch 8 fits 300 ms (2 x 130 ms), 8 chunks / 130 ms, a robot asks 50 / 25 = 2 chunks a second
    assert capacity_robots_per_gpu(Fleet(robots=1, **PI0_ROBOTS)) == pytest.approx(8 / 0.130 / 2)


def test_one_chunk_robot_on_an_idle_gpu_is_always_fed() -> None:
    r = simulate(robots=1, **PI0_ROBOTS, **IDLE)
    assert r["ticks"] == pytest.approx(4.0 * 50, abs=1)
    assert r["on_time_fraction"] == 1.0 and r["goodput"] == pytest.approx(50.0, abs=0.25)
    assert r["requests_per_tick"] == pytest.approx(1 / 25, abs=0.003)  # one chunk per 25 ticks played
    assert r["latency_p50_ms"] == pytest.approx(60.0)  # a pass of one, nothing else on the way
    assert r["failfast"] == r["expired"] == r["late"] == 0


def test_a_chunk_slower_than_its_play_starves_in_proportion() -> None:
    """A chunk takes 1 s, its 25 actions play in 0.5 s: back-to-back requests feed half the ticks."""
    r = simulate(robots=1, **{**PI0_ROBOTS, "line": Line(1.0, 0.0)}, deadline_s=2.0, **{**IDLE, "duration_s": 10.0})
    assert r["on_time_fraction"] == pytest.approx(0.5, abs=0.03)
    assert r["requests_per_tick"] == pytest.approx(1 / 50, abs=0.003)


def test_a_chunk_answered_after_its_deadline_never_feeds_the_robot() -> None:
    """The web answers 504 at the deadline: a pass longer than it computes a chunk the robot never gets, and
    the robot asks again after ControlLoop's 50 ms."""
    r = simulate(robots=1, **{**PI0_ROBOTS, "line": Line(0.5, 0.0)}, deadline_s=0.3, policy="fifo",
                 fail_fast=False, **IDLE)
    assert r["on_time"] == 0 and r["late"] > 0
    sim = Sim(Fleet(robots=1, **{**PI0_ROBOTS, "line": Line(0.5, 0.0)}, deadline_s=0.3, policy="fifo",
                    fail_fast=False, **IDLE))
    sim.run()
    assert sim.robots[0].player.remaining == 0 and not sim.robots[0].recent


def test_the_scheduler_serves_a_chunk_fleet_at_capacity() -> None:
    """Past capacity, ours keeps the GPU's chunks on time (fail-fast refusals instead of late chunks); the
    baseline computes chunks that arrive late."""
    ours = simulate(robots=46, **PI0_ROBOTS, duration_s=6.0)
    base = simulate(robots=46, **PI0_ROBOTS, duration_s=6.0, policy="fifo", fail_fast=False)
    assert ours["failfast"] > 0 and ours["late"] == 0
    assert ours["goodput"] > 2 * base["goodput"]


def test_overhead_samples_equal_to_the_constant_change_nothing() -> None:
    kw = {"robots": 25, "duration_s": 3.0, "overhead_s": 0.04}
    assert simulate(**kw) == simulate(**kw, overhead_samples_s={"rest": (0.04,)})


def test_overhead_drawn_from_samples_is_seeded_and_keeps_its_tail() -> None:
    """Half the requests take 1 s of overhead: with a 300 ms deadline those ticks are lost (they reach the pool
    after their deadline, and the scheduler ends them), the others not."""
    kw = {"robots": 4, "duration_s": 10.0, "overhead_samples_s": {"rest": (0.01, 1.0)}}
    r = simulate(**kw)
    assert r == simulate(**kw)
    assert r["on_time_fraction"] == pytest.approx(0.5, abs=0.1)
    assert r["expired"] + r["late"] + r["failfast"] == pytest.approx(r["ticks"] - r["on_time"], abs=2)


def test_transports_take_turns_and_draw_their_own_overheads() -> None:
    r = simulate(robots=4, duration_s=10.0, transports=("rest", "openpi"),
                 overhead_samples_s={"rest": (0.01,), "openpi": (1.0,)})
    assert r["on_time_fraction"] == pytest.approx(0.5, abs=0.02)  # the two openpi robots are always late
