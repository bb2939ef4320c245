"""A discrete-event simulator of a robot fleet on a GPU pool, with the GPU workers' own batch-formation rule.

Each GPU runs workers/gpu/schedule.py's `plan` (edf, or fifo: the baseline) on its queue, learns its
LatencyCurve from its passes, and takes `curve(n)` (the simulated GPU's line, with a little jitter) per pass;
admission uses workers/wire/backlog.py's verdict (fail-fast; off for the baseline). So what it says about 1,000
robots on 32 GPUs is what the worker code does, without the hardware.

Modelled as the stack runs: a request reaches the pool `overhead_s / 2` after its tick (web, broker) and its
answer the robot `overhead_s / 2` after its pass (safety stage, wake-up). A message goes to a worker with a
free task thread (round robin, as the workers' consumers take turns), else waits in the model's queue, first
in first out, for a thread. A worker starts a pass as soon as it is idle and holds work (under load, work
queues during each pass: the batching window is left out). OpenVLA robots: one request per tick, deadline a
fixed time after the tick, the tick on time if its answer arrives by then.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from ops.bench.common import pct
from workers.gpu.schedule import plan
from workers.wire.backlog import verdict
from workers.wire.curve import LatencyCurve, Line

OPENVLA_H100 = Line(0.084571, 0.005429)  # 90 ms at n=1, 128 ms at n=8 (workers/policies/sim.py)


@dataclass
class Fleet:
    robots: int
    gpus: int = 1
    hz: float = 3.0
    deadline_s: float = 0.300
    line: Line = OPENVLA_H100
    max_batch: int = 8
    threads: int = 32  # task threads per GPU worker (ops/procfile's concurrency)
    overhead_s: float = 0.010  # web + broker + safety + wake-up, both ways
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
    robot: int = field(compare=False, default=0)
    sent: float = field(compare=False, default=0.0)


@dataclass
class Gpu:
    queue: list[Item] = field(default_factory=list)
    busy_until: float = 0.0
    held: int = 0  # task threads holding a message
    busy_s: float = 0.0


class Sim:
    def __init__(self, f: Fleet):
        self.f = f
        self.rng = random.Random(f.seed)
        self.events: list = []
        self.seq = itertools.count()
        self.gpus = [Gpu() for _ in range(f.gpus)]
        self.curves = [LatencyCurve(f.max_batch) for _ in range(f.gpus)]
        self.waiting: deque[Item] = deque()  # the broker queue: no free task thread anywhere
        self.rr = 0
        self.backlog: dict[int, float] = {}  # seq -> deadline: what admission counts
        self.ticks = self.on_time = self.failfast = self.expired = self.late = 0
        self.per_robot = [[0, 0] for _ in range(f.robots)]  # [ticks, on time]
        self.latencies: list[float] = []

    def at(self, t: float, kind: str, *args) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, args))

    def run(self) -> dict:
        f = self.f
        period = 1.0 / f.hz
        for r in range(f.robots):
            self.at(self.rng.uniform(0, period), "tick", r)
        end = f.warmup_s + f.duration_s + 2 * f.deadline_s + f.overhead_s  # the last counted ticks' answers
        while self.events:
            t, _, kind, args = heapq.heappop(self.events)
            if t > end:
                break
            getattr(self, "on_" + kind)(t, *args)
        return self.summary()

    def counted(self, t: float) -> bool:
        return self.f.warmup_s <= t < self.f.warmup_s + self.f.duration_s

    def on_tick(self, t: float, robot: int) -> None:
        f = self.f
        if t >= f.warmup_s + f.duration_s:
            return
        self.at(t + 1.0 / f.hz, "tick", robot)
        item = Item(0, next(self.seq), t + f.deadline_s, robot % 3, robot, t)
        if self.counted(t):
            self.ticks += 1
            self.per_robot[robot][0] += 1
        self.at(t + f.overhead_s / 2, "arrive", item)

    def on_arrive(self, t: float, item: Item) -> None:
        if self.f.fail_fast:
            self.backlog = {s: d for s, d in self.backlog.items() if d > t}
            beats = [{"state": "ready", "stats": {"curve": c.to_dict()}} for c in self.curves]
            v = verdict(len(self.backlog), beats, (item.deadline - t) * 1e3)
            if v is not None and not v.attainable:
                self.failfast += self.counted(item.sent)
                return
            self.backlog[item.seq] = item.deadline
        self.dispatch(t, item)

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
        # the margin: the answer's way back, and the pass's jitter above the curve's mean
        margin = f.overhead_s / 2 + f.jitter * f.line(f.max_batch)
        p = plan(gpu.queue, t, self.curves[g], f.max_batch, policy=f.policy, margin_s=margin)
        gpu.queue = p.rest
        for item, _ in p.expired:  # told at once
            self.done(item, None)
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
            self.done(item, t + self.f.overhead_s / 2)
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
            self.per_robot[item.robot][1] += 1
        else:
            self.late += 1

    def summary(self) -> dict:
        f = self.f
        lat = [v * 1e3 for v in self.latencies]
        fractions = sorted(on / n for n, on in self.per_robot if n)
        return {"robots": f.robots, "gpus": f.gpus, "policy": f.policy, "fail_fast": f.fail_fast,
                "ticks": self.ticks, "on_time": self.on_time, "on_time_fraction": self.on_time / max(1, self.ticks),
                "goodput": self.on_time / f.duration_s, "failfast": self.failfast, "expired": self.expired,
                "late": self.late, "latency_p50_ms": round(pct(lat, 50), 2), "latency_p99_ms": round(pct(lat, 99), 2),
                "worst_robot_on_time": round(fractions[0], 4) if fractions else None,
                "gpu_busy_fraction": min(1.0, sum(g.busy_s for g in self.gpus) / (f.duration_s * f.gpus))}


def simulate(**kw) -> dict:
    return Sim(Fleet(**kw)).run()


def capacity_robots_per_gpu(f: Fleet) -> float:
    """Robots one GPU can serve in theory: the biggest batch whose worst case (wait one pass, then run one)
    fits the deadline, at its throughput, divided by the robot's rate."""
    budget = f.deadline_s - f.overhead_s
    best = 1
    for b in range(1, f.max_batch + 1):
        if 2 * f.line(b) <= budget:
            best = b
    return best / f.line(best) / f.hz


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
