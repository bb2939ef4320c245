"""The simulator's robots (ops/bench/fleet_des.py), each consuming what the pool returns as the real stack's
robots do (ops/bench/fleet_robots.py).

StepRobot (OpenVLA): one request per tick, deadline a fixed time after the tick; the tick is on time if its
answer arrives by then.

ChunkRobot (pi0): plays a chunk at the control rate, one action per tick, from the Python client's own
ChunkPlayer; a tick is on time if an action is there. It asks for the next chunk the way the client's
ControlLoop (append mode) does, which is what the stack's chunk robots run: only when the queued actions cover
less than the expected latency (the p90 of its last 50 latencies, plus a quarter; half a period before the
first answer), one request at a time, with a deadline of when the queued actions run out (never under the
least deadline `Fleet.deadline_s`); after a refusal it waits as ControlLoop does (vlaapi_client.control.
retry_wait_s: the problem document's retry_after_ms, which the client prefers to REST's whole-second
Retry-After on both transports, never under a floor that doubles with each refusal in a row, at most 1 s).
Over openpi the deadline is the connection's, fixed at `Fleet.deadline_s` (openpi's protocol carries none per
message). The two rules ControlLoop keeps inside its
methods (expected latency, deadline) are mirrored here; tests/ops/test_fleet_des.py checks them against it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np
from vlaapi_client.chunks import ChunkPlayer
from vlaapi_client.control import retry_wait_s


class Sim(Protocol):
    """What a robot uses of the simulator (fleet_des.Sim; its Fleet and Items are passed in)."""

    window_end: float

    def at(self, t: float, kind: str, *args: Any) -> None: ...

    def counted(self, t: float) -> bool: ...

    def send(self, robot: Any, t: float, deadline: float) -> None: ...

RECENT = 50  # ControlLoop's window of recent latencies


class StepRobot:
    def __init__(self, index: int, f: Any, transport: str):
        self.index, self.transport = index, transport
        self.period, self.deadline_s = 1.0 / f.hz, f.deadline_s
        self.phase_span = self.period  # random phases over one request cycle
        self.ticks = self.on_time = self.requests = 0

    def tick(self, sim: Sim, t: float) -> None:
        if t >= sim.window_end:
            return
        sim.at(t + self.period, "tick", self)
        if sim.counted(t):
            self.ticks += 1
        sim.send(self, t, t + self.deadline_s)

    def answer(self, sim: Sim, t: float, item: Any, outcome: str, retry_after_ms: float | None) -> None:
        if outcome == "ok" and sim.counted(item.sent):
            self.on_time += 1


class ChunkRobot:
    def __init__(self, index: int, f: Any, transport: str):
        self.index, self.transport = index, transport
        self.period = 1.0 / f.hz
        self.phase_span = self.period * f.horizon  # robots start at random over one chunk's play, not in one tick
        self.min_deadline_ms = int(f.deadline_s * 1e3)
        self.fixed_deadline = transport == "openpi"
        self.player = ChunkPlayer(horizon=f.horizon)
        self.chunk = np.zeros((f.chunk_length, 7))  # the shape the service returns; the values do not matter here
        self.recent: deque[float] = deque(maxlen=RECENT)
        self.expected_s = self.period / 2  # expected_latency_s(), kept up to date (a tick must not pay a percentile)
        self.busy = False  # a request in flight, or the fetcher sleeping after a refusal
        self.refusals = 0  # in a row (ControlLoop's backoff)
        self.ticks = self.on_time = self.requests = 0

    def expected_latency_s(self) -> float:
        """ControlLoop.expected_latency_s."""
        if not self.recent:
            return self.period / 2
        return float(np.percentile(self.recent, 90)) / 1000 * 1.25

    def retry_s(self, retry_after_ms: float | None) -> float:
        """How long ControlLoop's fetcher sleeps after this refusal (the one `answer` has just counted)."""
        return retry_wait_s(None if retry_after_ms is None else retry_after_ms / 1e3, self.refusals)

    def deadline_ms(self) -> int:
        """ControlLoop.fetch_once's deadline (append mode): when the queued actions run out, never under the
        least deadline; over openpi, the connection's."""
        if self.fixed_deadline:
            return self.min_deadline_ms
        return max(self.min_deadline_ms, int((self.player.remaining + 1) * self.period * 1000))

    def tick(self, sim: Sim, t: float) -> None:
        if t >= sim.window_end:
            return
        sim.at(t + self.period, "tick", self)
        action = self.player.next()
        if sim.counted(t):
            self.ticks += 1
            self.on_time += action is not None
        self.maybe_fetch(sim, t)  # a tick wakes the fetcher (ControlLoop.control sets `wake`)

    def maybe_fetch(self, sim: Sim, t: float) -> None:
        if self.busy or t >= sim.window_end:
            return
        if self.player.wants_more(self.expected_s, self.period):
            self.busy = True
            sim.send(self, t, t + self.deadline_ms() / 1e3)

    def answer(self, sim: Sim, t: float, item: Any, outcome: str, retry_after_ms: float | None) -> None:
        if outcome != "ok":
            self.refusals += 1
            sim.at(t + self.retry_s(retry_after_ms), "retry", self)
            return
        self.refusals = 0
        self.recent.append((t - item.sent) * 1e3)
        self.expected_s = self.expected_latency_s()
        self.player.push(self.chunk)
        self.busy = False
        self.maybe_fetch(sim, t)

    def retry(self, sim: Sim, t: float) -> None:
        self.busy = False
        self.maybe_fetch(sim, t)


KINDS = {"step": StepRobot, "chunk": ChunkRobot}
