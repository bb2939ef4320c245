"""A discrete-event simulator of a robot fleet on a GPU pool, with the GPU workers' own batch-formation rule.

Each GPU runs workers/gpu/schedule.py's `plan` (edf, or fifo: the baseline) on its queue, learns its
LatencyCurve from its passes, and takes `curve(n)` (the simulated GPU's line, with a little jitter) per pass;
admission uses workers/wire/backlog.py's verdict (fail-fast; off for the baseline). So what it says about 1,000
robots on 32 GPUs is what the worker code does, without the hardware.

Modelled as the stack runs: a request reaches the pool half its overhead (web, broker, safety stage, wake-up,
both ways) after it is sent, and its answer the robot the other half after its pass. The overhead is
`overhead_s`, or, when `overhead_samples_s` gives a stack point's measured overheads (per transport), a draw
from them per request (seeded), so the twin of a stack point has that point's tail, not only its median. A
message goes to a worker with a free task thread (round robin, as the workers' consumers take turns), else
waits in the model's queue, first in first out, for a thread. A worker starts a pass as soon as it is idle and
holds work (under load, work queues during each pass: the batching window is left out). A request still
unanswered at its deadline is answered 504 then (the web's waiter expires it), whatever its worker does later.
Robots (ops/bench/fleet_des_robots.py): "step" (OpenVLA, one request per tick) or "chunk" (pi0, chunks played
at the control rate, asked for as the Python client's ControlLoop does).
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ops.bench.common import pct
from ops.bench.fleet_des_robots import KINDS
from workers.gpu.schedule import plan
from workers.policies.sim import PRESETS
from workers.wire.backlog import verdict
from workers.wire.curve import LatencyCurve, Line


def preset_line(family: str) -> Line:
    """The sim policy's H100 curve for a family (workers/policies/sim.py), in seconds."""
    a_ms, b_ms, _, _ = PRESETS[family]
    return Line(a_ms / 1e3, b_ms / 1e3)


OPENVLA_H100 = preset_line("openvla")  # 90 ms at n=1, 128 ms at n=8
PI0_H100 = preset_line("pi0")  # 60 ms at n=1, 130 ms at n=8 (a 50-action chunk)
# pi0 robots: 50 Hz (pi0's ALOHA rate), 25 actions played of each 50-action chunk (openpi's ALOHA example's
# action_horizon), so two chunks a second; a request's deadline is at least the OpenVLA robots' 300 ms.
PI0_ROBOTS: dict[str, Any] = {"kind": "chunk", "hz": 50.0, "horizon": 25, "chunk_length": 50, "line": PI0_H100}


@dataclass
class Fleet:
    robots: int
    gpus: int = 1
    kind: str = "step"  # "step": OpenVLA robots; "chunk": pi0 robots (PI0_ROBOTS)
    hz: float = 3.0
    deadline_s: float = 0.300  # step: each tick's deadline; chunk: the least deadline a request carries
    line: Line = OPENVLA_H100
    horizon: int = 25  # chunk: actions played of each chunk
    chunk_length: int = 50
    transports: tuple[str, ...] = ("rest",)  # robot r uses transports[r % len]: "rest" or "openpi"
    max_batch: int = 8
    threads: int = 32  # task threads per GPU worker (ops/procfile's concurrency)
    overhead_s: float = 0.010  # web + broker + safety + wake-up, both ways
    overhead_samples_s: dict[str, tuple[float, ...]] | None = None  # per transport: measured overheads to draw
    margin_s: float | None = None  # the scheduler's margin; None: half the overhead and the pass's jitter
    jitter: float = 0.03  # a pass takes curve(n) · (1 ± jitter)
    policy: str = "edf"
    fail_fast: bool = True
    duration_s: float = 20.0
    warmup_s: float = 2.0
    seed: int = 0


@dataclass(order=True)
class Item:
    priority: int
    seq: int
    deadline: float | None = field(compare=False)
    tier_rank: int = field(compare=False, default=1)
    robot: Any = field(compare=False, default=None)
    sent: float = field(compare=False, default=0.0)
    out_s: float = field(compare=False, default=0.0)  # the answer's way back
    answer_at: float | None = field(compare=False, default=None)  # when a computed answer reaches the robot
    settled: bool = field(compare=False, default=False)  # the robot has heard its outcome


@dataclass
class Gpu:
    queue: list[Item] = field(default_factory=list)
    busy_until: float = 0.0
    held: int = 0  # task threads holding a message
    busy_s: float = 0.0


class Sim:
    def __init__(self, f: Fleet):
        self.f = f
        self.rng = random.Random(f.seed)  # robot phases and pass jitter
        self.overhead_rng = random.Random(f"{f.seed}/overhead")  # its own stream: samples leave the rest alone
        self.events: list = []
        self.seq = itertools.count()
        self.gpus = [Gpu() for _ in range(f.gpus)]
        self.curves = [LatencyCurve(f.max_batch) for _ in range(f.gpus)]
        self.waiting: deque[Item] = deque()  # the broker queue: no free task thread anywhere
        self.rr = 0
        self.backlog: dict[int, float] = {}  # seq -> deadline: what admission counts
        self.on_time = self.failfast = self.expired = self.late = 0
        self.robots = [KINDS[f.kind](r, f, f.transports[r % len(f.transports)]) for r in range(f.robots)]
        self.latencies: list[float] = []
        self.window_end = f.warmup_s + f.duration_s
        self.margin = f.margin_s if f.margin_s is not None else f.overhead_s / 2 + f.jitter * f.line(f.max_batch)

    def at(self, t: float, kind: str, *args) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, args))

    def run(self) -> dict:
        for robot in self.robots:
            self.at(self.rng.uniform(0, robot.phase_span), "tick", robot)
        while self.events:  # nothing is sent after the window, so the answers left drain and it ends
            t, _, kind, args = heapq.heappop(self.events)
            getattr(self, "on_" + kind)(t, *args)
        return self.summary()

    def counted(self, t: float) -> bool:
        return self.f.warmup_s <= t < self.window_end

    def on_tick(self, t: float, robot) -> None:
        robot.tick(self, t)

    def on_retry(self, t: float, robot) -> None:
        robot.retry(self, t)

    def send(self, robot, t: float, deadline: float) -> None:
        """A robot's request at t: through the web and broker, then to the pool; 504 at its deadline at the
        latest."""
        pool = (self.f.overhead_samples_s or {}).get(robot.transport)
        overhead = self.overhead_rng.choice(pool) if pool else self.f.overhead_s
        item = Item(0, next(self.seq), deadline, robot.index % 3, robot, t, overhead / 2)
        if self.counted(t):
            robot.requests += 1
        self.at(t + overhead / 2, "arrive", item)
        self.at(deadline, "timeout", item)

    def on_arrive(self, t: float, item: Item) -> None:
        if self.f.fail_fast:
            self.backlog = {s: d for s, d in self.backlog.items() if d > t}
            beats = [{"state": "ready", "stats": {"curve": c.to_dict()}} for c in self.curves]
            v = verdict(len(self.backlog), beats, (item.deadline - t) * 1e3)
            if v is not None and not v.attainable:
                self.failfast += self.counted(item.sent)
                self.at(t + item.out_s, "answer", item, "failfast", v.retry_after_ms)
                return
            self.backlog[item.seq] = item.deadline
        self.dispatch(t, item)

    def on_answer(self, t: float, item: Item, outcome: str, retry_after_ms: float | None = None) -> None:
        if not item.settled:
            item.settled = True
            item.robot.answer(self, t, item, outcome, retry_after_ms)

    def on_timeout(self, t: float, item: Item) -> None:
        if item.answer_at is None or item.answer_at > item.deadline:  # no answer on its way in time
            self.on_answer(t, item, "expired")

    def dispatch(self, t: float, item: Item) -> None:
        for k in range(self.f.gpus):
            g = (self.rr + k) % self.f.gpus
            if self.gpus[g].held < self.f.threads:
                self.rr = g + 1
                self.gpus[g].held += 1
                self.gpus[g].queue.append(item)
                self.maybe_start(t, g)
                return
        self.waiting.append(item)

    def release(self, t: float, g: int, n: int) -> None:
        self.gpus[g].held -= n
        while self.waiting and self.gpus[g].held < self.f.threads:
            self.gpus[g].held += 1
            self.gpus[g].queue.append(self.waiting.popleft())

    def maybe_start(self, t: float, g: int) -> None:
        gpu, f = self.gpus[g], self.f
        if gpu.busy_until > t or not gpu.queue:
            return
        p = plan(gpu.queue, t, self.curves[g], f.max_batch, policy=f.policy, margin_s=self.margin)
        gpu.queue = p.rest
        for item, _ in p.expired:  # told at once
            self.done(item, None)
            self.at(t + item.out_s, "answer", item, "expired")
        if not p.run:
            self.release(t, g, len(p.expired))
            self.maybe_start(t, g)
            return
        took = f.line(len(p.run)) * (1 + self.rng.uniform(-f.jitter, f.jitter))
        self.curves[g].observe(len(p.run), took)
        gpu.busy_until = t + took
        if self.counted(t):
            gpu.busy_s += took
        self.release(t, g, len(p.expired))
        self.at(t + took, "finish", g, p.run)

    def on_finish(self, t: float, g: int, items: list[Item]) -> None:
        for item in items:
            item.answer_at = t + item.out_s
            self.done(item, item.answer_at)
            if item.answer_at <= item.deadline:
                self.at(item.answer_at, "answer", item, "ok")
        self.release(t, g, len(items))
        self.maybe_start(t, g)

    def done(self, item: Item, answered: float | None) -> None:
        self.backlog.pop(item.seq, None)
        if not self.counted(item.sent):
            return
        if answered is None:
            self.expired += 1
            return
        self.latencies.append(answered - item.sent)
        if answered <= item.deadline:
            self.on_time += 1
        else:
            self.late += 1

    def summary(self) -> dict:
        f = self.f
        lat = [v * 1e3 for v in self.latencies]
        ticks = sum(r.ticks for r in self.robots)
        on_time = sum(r.on_time for r in self.robots)  # step robots: answers on time; chunk robots: fed ticks
        requests = sum(r.requests for r in self.robots)
        fractions = sorted(r.on_time / r.ticks for r in self.robots if r.ticks)
        return {"robots": f.robots, "gpus": f.gpus, "kind": f.kind, "policy": f.policy, "fail_fast": f.fail_fast,
                "ticks": ticks, "on_time": on_time, "on_time_fraction": on_time / max(1, ticks),
                "goodput": on_time / f.duration_s, "requests": requests,
                "requests_per_tick": round(requests / max(1, ticks), 4), "answers_on_time": self.on_time,
                "failfast": self.failfast, "expired": self.expired, "late": self.late,
                "latency_p50_ms": round(pct(lat, 50), 2), "latency_p99_ms": round(pct(lat, 99), 2),
                "worst_robot_on_time": round(fractions[0], 4) if fractions else None,
                "gpu_busy_fraction": min(1.0, sum(g.busy_s for g in self.gpus) / (f.duration_s * f.gpus))}


def simulate(**kw) -> dict:
    return Sim(Fleet(**kw)).run()


def capacity_robots_per_gpu(f: Fleet) -> float:
    """Robots one GPU can serve in theory: the biggest batch whose worst case (wait one pass, then run one)
    fits the (least) deadline, at its throughput, divided by a robot's request rate (a chunk robot asks once
    per `horizon` ticks)."""
    budget = f.deadline_s - f.overhead_s
    best = 1
    for b in range(1, f.max_batch + 1):
        if 2 * f.line(b) <= budget:
            best = b
    per_tick = 1.0 / f.horizon if f.kind == "chunk" else 1.0
    return best / f.line(best) / (f.hz * per_tick)


def max_robots_on_time(target: float = 0.99, limit: int = 64, **kw) -> int:
    """The most robots one GPU serves with >= `target` of all ticks on time (searched upward)."""
    best = 0
    for n in range(1, limit + 1):
        if simulate(robots=n, **kw)["on_time_fraction"] >= target:
            best = n
        elif n > best + 3:
            break
    return best


if __name__ == "__main__":
    import json

    print(json.dumps(simulate(robots=1000, gpus=32, duration_s=10.0)))
