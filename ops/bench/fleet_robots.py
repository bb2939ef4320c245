"""The real stack's robots for the fleet benchmark: one thread each (a chunk robot two: ticks and fetcher), over
a door (ops/bench/fleet_doors.py: REST or the openpi websocket), counted into one Tally.

StepRobot (OpenVLA): at each tick it sends its observation with the deadline; the tick is on time if the answer
is a 200 within the deadline. A 503 deadline_unattainable is a fail-fast answer (counted with its latency);
anything else (504 expired, errors) is a missed tick.

ChunkRobot (pi0): the Python client's ControlLoop (append mode) itself: a control thread plays the chunk at the
control rate from a ChunkPlayer, one action per tick; a fetcher asks for the next chunk while the queued
actions still cover the expected latency, with a deadline of when they run out (never under `min_deadline_s`).
A tick is on time if an action is there. Requests per tick: every request sent (refused ones too) over ticks.
The simulator's chunk robots (ops/bench/fleet_des_robots.py) follow the same rule.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field

from vlaapi_client.control import ControlLoop

from ops.bench.fleet_doors import Answer, OpenpiDoor, RestDoor, timed


@dataclass
class RobotTally:
    transport: str
    ticks: int = 0
    on_time: int = 0
    requests: int = 0


@dataclass
class Tally:
    robots: list[RobotTally] = field(default_factory=list)
    failfast_ms: list[float] = field(default_factory=list)  # as the robot saw it
    failfast_server_ms: list[float] = field(default_factory=list)  # REST: inside the web (Server-Timing total)
    latency_ms: list[float] = field(default_factory=list)  # 200s
    overhead_ms: dict[str, list[float]] = field(default_factory=dict)  # per transport: latency less pass and queue
    expired_ms: list[float] = field(default_factory=list)  # 504s: ended by the scheduler or at the deadline
    other: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ticks(self) -> int:
        return sum(r.ticks for r in self.robots)

    @property
    def on_time(self) -> int:
        return sum(r.on_time for r in self.robots)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.robots)

    def request(self, robot: RobotTally, a: Answer, took: float) -> None:
        """One request sent inside the measured window, and what came of it."""
        with self.lock:
            robot.requests += 1
            if a.status == 200:
                self.latency_ms.append(took * 1e3)
                waited = a.timings_ms.get("simulated_ms", 0.0) + a.timings_ms.get("queue_ms", 0.0)
                self.overhead_ms.setdefault(robot.transport, []).append(took * 1e3 - waited)
            elif a.status == 503 and a.code == "deadline_unattainable":
                self.failfast_ms.append(took * 1e3)
                if a.server_ms is not None:
                    self.failfast_server_ms.append(a.server_ms)
            else:
                if a.status == 504:
                    self.expired_ms.append(took * 1e3)
                name = f"{a.status}:{a.code}"
                self.other[name] = self.other.get(name, 0) + 1

    def by_transport(self) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        for name in sorted({r.transport for r in self.robots}):
            mine = [r for r in self.robots if r.transport == name]
            ticks = sum(r.ticks for r in mine)
            out[name] = {"robots": len(mine), "ticks": ticks, "on_time": sum(r.on_time for r in mine),
                         "on_time_fraction": round(sum(r.on_time for r in mine) / max(1, ticks), 4),
                         "requests_per_tick": round(sum(r.requests for r in mine) / max(1, ticks), 4)}
        return out


class StepRobot:
    def __init__(self, door: RestDoor | OpenpiDoor, hz: float, deadline_s: float, seed: int):
        self.door, self.period, self.deadline_s, self.seed = door, 1.0 / hz, deadline_s, seed

    def run(self, counted_from: float, until: float, tally: Tally) -> None:
        mine = RobotTally(self.door.transport)
        self.door.connect()
        tick = time.monotonic() + random.Random(self.seed).uniform(0, self.period)
        try:
            while tick < until:
                time.sleep(max(0.0, tick - time.monotonic()))
                answer, sent, took = timed(self.door, int(self.deadline_s * 1e3))
                if sent >= counted_from:
                    tally.request(mine, answer, took)
                    with tally.lock:
                        mine.ticks += 1
                        mine.on_time += answer.status == 200 and took <= self.deadline_s
                tick += self.period * max(1, int((time.monotonic() - tick) // self.period) + 1)  # late: skip ticks
        finally:
            self.door.close()
        with tally.lock:
            tally.robots.append(mine)


class ChunkRobot:
    def __init__(self, door: RestDoor | OpenpiDoor, hz: float, horizon: int, min_deadline_s: float, seed: int):
        self.door, self.hz, self.horizon, self.seed = door, hz, horizon, seed
        self.min_deadline_ms = int(min_deadline_s * 1e3)

    def run(self, counted_from: float, until: float, tally: Tally) -> None:
        mine, sending = RobotTally(self.door.transport), threading.Lock()

        def fetch(deadline_ms: int):
            with sending:
                answer, sent, took = timed(self.door, deadline_ms)
            if counted_from <= sent < until:
                tally.request(mine, answer, took)
            if answer.error is not None:
                raise answer.error  # ControlLoop counts it and waits its retry_after (at most 1 s)
            return answer.actions

        loop = ControlLoop(fetch, self.hz, horizon=self.horizon, min_deadline_ms=self.min_deadline_ms)
        self.door.connect()
        # robots start at random over one chunk's play (as the simulator's), not all in one tick
        time.sleep(random.Random(self.seed).uniform(0, loop.period * self.horizon))
        began = time.monotonic()  # ControlLoop ticks at began + i·period (to within its thread's start)
        loop.run(until - began)
        first = max(0, math.ceil((counted_from - began) / loop.period))
        counted = loop.executed[first:]
        with tally.lock:
            mine.ticks, mine.on_time = len(counted), sum(a is not None for a in counted)
            tally.robots.append(mine)
        # the fetcher's last request may still be out (ControlLoop waits 5 s for it): let it end before closing,
        # or its answer would be an error of our own making
        if sending.acquire(timeout=self.min_deadline_ms / 1e3 * 4 + 10):
            sending.release()
        self.door.close()
