"""The fleet benchmark's studies (ops/bench/fleet.py runs them): the simulator's sweeps, the real stack's points,
and each stack point's twin in the simulator.

Robots: OpenVLA ("step": 3 Hz, one action per tick, 300 ms deadline) and pi0 ("chunk": 50 Hz, 25 actions of
each 50-action chunk played, asked for as the client's ControlLoop does, deadlines of at least 300 ms); tiers
enterprise/pro/free in turn; over REST, the openpi websocket, or both in turn ("mixed").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ops.bench.common import pct
from ops.bench.fleet_des import PI0_ROBOTS, Fleet, capacity_robots_per_gpu, max_robots_on_time, simulate
from ops.bench.fleet_doors import OpenpiDoor, RestDoor
from ops.bench.fleet_robots import ChunkRobot, StepRobot
from ops.bench.fleet_stack import MARGIN_MS, OPENVLA, PI0, Stack, customers, drive, setup
from workers.policies.sim import PRESETS
from workers.wire.curve import Line

LOADS = (0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0)
SWEEP_GPUS = 4
BASELINE = {"policy": "fifo", "fail_fast": False}
KINDS: dict[str, dict[str, Any]] = {"step": {}, "chunk": PI0_ROBOTS}  # the simulator's robot settings per kind
TRANSPORTS = {"rest": ("rest",), "openpi": ("openpi",), "mixed": ("rest", "openpi")}


def curve_table(name: str, line: Line, max_batch: int, unit: str) -> str:
    rows = [f"n={n}: {line(n) * 1e3:.1f} ms ({n / line(n):.1f} {unit}/s)" for n in range(1, max_batch + 1)]
    return f"simulated GPU ({name}, H100): {line.a * 1e3:.2f} + {line.b * 1e3:.3f}·n ms; " + "; ".join(rows)


def des_sweep(kind: str, duration: float) -> dict:
    """Ours against the baseline over LOADS on SWEEP_GPUS GPUs, and the robots one GPU serves at >= 99 %."""
    kw = KINDS[kind]
    cap = capacity_robots_per_gpu(Fleet(robots=1, **kw))
    sweep = []
    for load in LOADS:
        n = max(1, round(load * cap * SWEEP_GPUS))
        for who, policy in (("ours", {}), ("baseline", BASELINE)):
            r = simulate(robots=n, gpus=SWEEP_GPUS, duration_s=duration, **kw, **policy)
            sweep.append({"load": load, "who": who, **r})
            print(f"DES {kind} {who:8s} load {load:.2f} robots {n}: on time {r['on_time_fraction']:.4f} "
                  f"goodput {r['goodput']:.1f}/s requests/tick {r['requests_per_tick']} failfast {r['failfast']} "
                  f"p99 {r['latency_p99_ms']} ms", flush=True)
    rpg = max_robots_on_time(duration_s=duration, **kw)
    rpg_base = max_robots_on_time(duration_s=duration, **kw, **BASELINE)
    print(f"DES {kind} robots per GPU at >= 99% of ticks on time: ours {rpg}, baseline {rpg_base}", flush=True)
    return {"capacity_robots_per_gpu": cap, "sweep": sweep, "robots_per_gpu": rpg, "robots_per_gpu_baseline": rpg_base}


def thousand_on_32() -> dict:
    big = {who: simulate(robots=1000, gpus=32, duration_s=10.0, **policy)
           for who, policy in (("ours", {}), ("baseline", BASELINE))}
    print(f"DES 1,000 OpenVLA robots on 32 GPUs: {big}", flush=True)
    return big


@dataclass(frozen=True)
class Point:
    label: str
    kind: str  # "step" (OpenVLA) or "chunk" (pi0)
    load: float  # of the workers' capacity
    workers: int
    baseline: bool
    transport: str  # rest | openpi | mixed


def _robots(st: Stack, keys: list[str], p: Point, n: int, scale: float) -> list:
    model, family = (OPENVLA, "openvla") if p.kind == "step" else (PI0, "pi0")
    cameras, state_dim = PRESETS[family][3], (7 if family == "pi0" else None)
    deadline_s = 0.3 * scale  # the step robots' deadline; the chunk robots' least one (over openpi: always)
    out = []
    for i in range(n):
        key, transport = keys[i % len(keys)], TRANSPORTS[p.transport][i % len(TRANSPORTS[p.transport])]
        door = (RestDoor(st.url, key, model, cameras, state_dim, i) if transport == "rest" else
                OpenpiDoor(st.ws_url(model), key, int(deadline_s * 1e3), state_dim, i))
        out.append(StepRobot(door, 3.0 / scale, deadline_s, i) if p.kind == "step" else
                   ChunkRobot(door, PI0_ROBOTS["hz"] / scale, PI0_ROBOTS["horizon"], deadline_s, i))
    return out


def stack_point(st: Stack, keys: list[str], p: Point, cap: float, duration: float, warmup: float,
                scale: float) -> tuple[dict, dict[str, tuple[float, ...]]]:
    """One point: its figures, and the overheads (s, per transport) its answers showed, for its twin."""
    n = round(p.load * cap * p.workers)
    # a chunk robot's last request may carry a longer deadline than a step robot's: wait for it too
    join_s = 0.3 * scale * (1 if p.kind == "step" else 4) + 15
    tally, busy = drive(st, _robots(st, keys, p, n, scale), duration, warmup, join_s)
    r = {"label": p.label, "kind": p.kind, "transport": p.transport, "robots": n, "workers": p.workers,
         "baseline": p.baseline, "duration_s": duration, "warmup_s": warmup, "ticks": tally.ticks,
         "on_time_fraction": tally.on_time / max(1, tally.ticks), "goodput": tally.on_time / duration,
         "requests_per_tick": round(tally.requests / max(1, tally.ticks), 4),
         "latency_p50_ms": round(pct(tally.latency_ms, 50), 1), "latency_p99_ms": round(pct(tally.latency_ms, 99), 1),
         "failfast": len(tally.failfast_ms), "failfast_p99_ms": round(pct(tally.failfast_ms, 99), 2),
         "failfast_p50_ms": round(pct(tally.failfast_ms, 50), 2), "other": tally.other,
         "failfast_server_p99_ms": round(pct(tally.failfast_server_ms, 99), 2),
         "failfast_server_p50_ms": round(pct(tally.failfast_server_ms, 50), 2),
         "overhead_p50_ms": round(pct([v for vs in tally.overhead_ms.values() for v in vs], 50), 1),
         "expired_answer_p50_ms": round(pct(tally.expired_ms, 50), 1),
         "worst_robot_on_time": round(min(x.on_time / x.ticks for x in tally.robots if x.ticks), 3)
         if any(x.ticks for x in tally.robots) else None,
         "gpu_busy_fraction": round(busy / (duration * p.workers), 3)}
    if len(TRANSPORTS[p.transport]) > 1:
        r["by_transport"] = tally.by_transport()
    r = {k: None if isinstance(v, float) and v != v else v for k, v in r.items()}  # NaN is not JSON: no sample
    print(f"STACK {r}", flush=True)
    return r, {t: tuple(v / 1e3 for v in vs) for t, vs in tally.overhead_ms.items()}


def stack_study(args, caps: dict[str, float]) -> tuple[list[dict], dict[str, dict]]:
    """The stack's points, in as few stack starts as they allow; returns the points and their overheads."""
    env = setup(args.scale)
    keys = customers(env)
    points, samples = [], {}
    step = [[Point("ours_80", "step", 0.8, 1, False, args.transport),
             Point("ours_150", "step", 1.5, 1, False, args.transport)],
            [Point("baseline_150", "step", 1.5, 1, True, args.transport)]]
    if not args.no_scaleout:
        step.append([Point("ours_150_x4", "step", 1.5, 4, False, args.transport)])
    chunk = [] if args.no_pi0 else [
        [Point("pi0_ours_80", "chunk", 0.8, 1, False, args.pi0_transport),
         Point("pi0_ours_150", "chunk", 1.5, 1, False, args.pi0_transport)],
        [Point("pi0_baseline_150", "chunk", 1.5, 1, True, args.pi0_transport)]]
    for group in step + chunk:
        first = group[0]
        openpi = any(p.transport != "rest" for p in group)
        model = OPENVLA if first.kind == "step" else PI0
        duration, warmup = (args.duration, args.warmup) if first.kind == "step" else (args.pi0_duration,
                                                                                     args.pi0_warmup)
        with Stack(env, first.workers, baseline=first.baseline, model=model, openpi=openpi) as st:
            for p in group:
                r, samples[p.label] = stack_point(st, keys, p, caps[p.kind], duration, warmup, args.scale)
                points.append(r)
    if not args.no_scaleout and args.hosts:
        hosts_point(args, caps, points, samples)
    return points, samples


def hosts_point(args, caps: dict[str, float], points: list[dict], samples: dict) -> None:
    """Ours at 150 % of 4 workers dealt out over `args.hosts` GPU hosts, each host a network namespace with
    its own links to Redis and PostgreSQL (ops/bench/fleet_hosts.py); skipped, saying why, where none can be
    made."""
    from ops.bench.fleet_hosts import Hosts, HostsStack, available

    why = available()
    if why is not None:
        print(f"STACK several-hosts point skipped: {why}", flush=True)
        return
    p = Point("ours_150_x4_hosts", "step", 1.5, 4, False, args.transport)
    with Hosts(args.hosts, args.scale) as hosts:
        keys = customers(hosts.env)
        with HostsStack(hosts, p.workers, baseline=False, model=OPENVLA, openpi=p.transport != "rest") as st:
            r, samples[p.label] = stack_point(st, keys, p, caps[p.kind], args.duration, args.warmup, args.scale)
            points.append({**r, "gpu_hosts": args.hosts})


def des_twin(p: dict, overheads: dict[str, tuple[float, ...]], scale: float) -> dict:
    """The simulator's run of a stack point: the stack's scaled time, its robots, transports and tiers, the
    workers' margin, and per request an overhead drawn from those the point measured (per transport)."""
    kw = dict(KINDS[p["kind"]])
    line = kw.pop("line", Fleet.line)
    kw.update(hz=kw.get("hz", Fleet.hz) / scale, deadline_s=Fleet.deadline_s * scale,
              line=Line(line.a * scale, line.b * scale))
    policy = BASELINE if p["baseline"] else {}
    pooled = [v for vs in overheads.values() for v in vs]
    return simulate(robots=p["robots"], gpus=p["workers"], transports=TRANSPORTS[p["transport"]],
                    overhead_s=pct(pooled, 50) if pooled else Fleet.overhead_s, overhead_samples_s=overheads,
                    margin_s=MARGIN_MS / 1e3, duration_s=p["duration_s"], warmup_s=p["warmup_s"], **kw, **policy)
