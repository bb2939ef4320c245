"""The fleet benchmark's stack robots (ops/bench/fleet_robots.py) and doors (ops/bench/fleet_doors.py): what is
counted, how the openpi door's refusals are read, and a chunk robot driven by the client's ControlLoop against
a door of known latency (the service here is a sleep, as in tests/clients/test_control.py; the real service is
driven by `python -m ops.bench.fleet`)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from vlaapi_client.errors import from_status

from ops.bench.fleet_doors import Answer, _refusal
from ops.bench.fleet_robots import ChunkRobot, RobotTally, Tally
from web.compat.openpi.session import problem_text
from web.errors import ApiError


def test_tally_sorts_answers_and_keeps_overheads_per_transport() -> None:
    tally = Tally()
    rest, openpi = RobotTally("rest"), RobotTally("openpi")
    ok = Answer(200, np.zeros((50, 7)), {"simulated_ms": 1300.0, "queue_ms": 200.0})
    tally.request(rest, ok, 1.6)
    tally.request(openpi, ok, 1.55)
    refused = {"type": "https://vlaapi.dev/problems/deadline_unattainable", "retry_after_ms": 300}
    tally.request(rest, Answer(503, error=from_status(503, refused, 1.0)), 0.01)
    expired = {"type": "https://vlaapi.dev/problems/deadline_exceeded"}
    tally.request(openpi, Answer(504, error=from_status(504, expired, None)), 4.0)
    tally.robots += [rest, openpi]
    assert tally.requests == 4 and rest.requests == openpi.requests == 2
    assert tally.overhead_ms == {"rest": [pytest.approx(100.0)], "openpi": [pytest.approx(50.0)]}
    assert tally.failfast_ms == [pytest.approx(10.0)] and tally.expired_ms == [pytest.approx(4000.0)]
    assert tally.other == {"504:deadline_exceeded": 1}


def test_an_openpi_refusal_reads_as_the_rest_one() -> None:
    """The door's text frame (its own problem_text) gives the status, the code and retry_after_ms as seconds."""
    err = ApiError(503, "deadline_unattainable", "cannot serve this in time", headers={"Retry-After": "1"},
                   expected_ms=900.0, deadline_ms=600, retry_after_ms=300)
    answer = _refusal(f"Error in inference server:\n{problem_text(err)}")
    assert answer.status == 503 and answer.code == "deadline_unattainable"
    assert answer.error.retry_after == pytest.approx(0.3)
    garbled = _refusal("Error in inference server:\nTraceback ...")
    assert garbled.status == 0 and garbled.error is not None


class SleepDoor:
    """A door of fixed latency; `refuse` first answers refused (503 deadline_unattainable)."""

    transport = "rest"

    def __init__(self, latency_s: float, chunk: int, refuse: int = 0):
        self.latency_s, self.chunk, self.refuse = latency_s, chunk, refuse
        self.deadlines: list[int] = []

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, deadline_ms: int) -> Answer:
        self.deadlines.append(deadline_ms)
        time.sleep(self.latency_s)
        if self.refuse:
            self.refuse -= 1
            doc = {"type": "https://vlaapi.dev/problems/deadline_unattainable", "status": 503}
            return Answer(503, error=from_status(503, doc, None))
        return Answer(200, np.zeros((self.chunk, 7)), {"simulated_ms": self.latency_s * 1e3})


def test_chunk_robot_plays_its_chunks_and_counts_only_the_window() -> None:
    """20 Hz, 5 of 10 actions played per chunk, 40 ms a chunk: every counted tick fed, one request per 5 ticks,
    and the refused first requests (in the warm-up) asked again and not counted."""
    door = SleepDoor(0.04, 10, refuse=2)
    tally, now = Tally(), time.monotonic()
    ChunkRobot(door, 20.0, 5, 0.2, seed=0).run(now + 1.0, now + 3.0, tally)
    (robot,) = tally.robots
    assert robot.ticks == pytest.approx(40, abs=1)  # 2 s at 20 Hz
    assert robot.on_time >= 0.9 * robot.ticks  # a loaded machine may starve a tick
    assert robot.requests == pytest.approx(robot.ticks / 5, abs=2)
    assert tally.failfast_ms == [] and len(tally.overhead_ms["rest"]) == robot.requests
    assert min(door.deadlines) >= 200  # never under the least deadline
