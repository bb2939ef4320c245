"""Where a request's CPU goes: CPU milliseconds per request in each process of our stack and of the naive chain.

    python -m ops.bench.cpu_budget [--clients 8] [--duration 10]
    python -m ops.bench.cpu_budget --door openpi [--clients 1,8]    # pi0-tiny through the openpi websocket door

On a machine with few cores the sync path is CPU-bound at 8 clients, so throughput is set by the CPU each
request costs summed over every process it crosses (web, GPU worker, safety worker, PostgreSQL, Redis).
This runs the same stacks as ops/bench/pipeline.py one after the other under a closed loop and reads
utime+stime from /proc for each process group before and after. Linux only. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import requests

from ops.bench.common import closed_loop, emit, free_port, machine, png_b64, stop, wait_http
from ops.bench.pipeline import bench_key, setup, start_naive, start_ours, wait_ready

TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def _cpu_by_group(groups: dict[str, int]) -> dict[tuple[str, int], float]:
    """CPU ms so far per (group, pid): the named process groups, plus every postgres and redis-server process on
    the machine (per pid, so a process that exits or starts between two readings is left out, not subtracted)."""
    out: dict[tuple[str, int], float] = {}
    by_pgid = {pgid: name for name, pgid in groups.items()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        pgid, utime, stime = int(fields[2]), int(fields[11]), int(fields[12])
        name = by_pgid.get(pgid) or ("postgres" if comm.startswith("postgres") else
                                     "redis" if comm.startswith("redis-server") else None)
        if name:
            out[(name, int(entry.name))] = (utime + stime) * TICK_MS
    return out


def measure(url: str, body: dict, headers: dict, groups: dict[str, int], clients: int, duration: float) -> dict:
    sessions = [requests.Session() for _ in range(clients)]

    def call(i: int) -> None:
        r = sessions[i].post(url, json=body, headers=headers, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])

    return measure_calls(call, groups, clients, duration)


def measure_calls(call, groups: dict[str, int], clients: int, duration: float) -> dict:
    closed_loop(call, clients, 1.0, warmup_s=0.0)  # warm every connection and thread first
    before = _cpu_by_group(groups)
    run = closed_loop(call, clients, duration, warmup_s=0.0)
    after = _cpu_by_group(groups)
    n = max(run["n"], 1)
    per_request = dict.fromkeys([*groups, "postgres", "redis"], 0.0)
    for key in after.keys() & before.keys():
        per_request[key[0]] += after[key] - before[key]
    per_request = {k: round(v / n, 2) for k, v in per_request.items()}
    per_request["total"] = round(sum(per_request.values()), 2)
    return {"throughput_rps": run["throughput_rps"], "p50_ms": run["p50_ms"], "cpu_ms_per_request": per_request}


def openpi_door(args: argparse.Namespace) -> None:
    """Our openpi door with pi0-tiny and openpi-client's libero observation (as ops/bench/peers.py): CPU per
    request in the door, the GPU worker, the safety worker, PostgreSQL and Redis, at each client count."""
    from ops.bench.common import spawn
    from ops.bench.peers import PI0, observations, openpi_path
    from ops.bench.pipeline import LOGS

    env = setup(PI0)
    env["OPENPI_TIER_CONNECTIONS"] = "free=4,pro=32,enterprise=128,bench=64"  # room for every client
    key = bench_key(env)
    results: dict = {"bench": "cpu_budget", "door": "openpi", "model": PI0, "machine": machine()}
    port, door = free_port(), free_port()
    procs = start_ours(env, PI0, port)
    procs.append(spawn(["web.compat.openpi", "--port", str(door)], env, LOGS / "ours-openpi.log"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        wait_ready(f"http://127.0.0.1:{port}", key, PI0)
        groups = dict(zip(("web", "gpu_worker", "safety_worker", "door"), (p.pid for p in procs), strict=True))
        libero, _ = observations()
        for clients in [int(c) for c in str(args.clients).split(",")]:
            call = openpi_path(f"ws://127.0.0.1:{door}/v1/openpi/{PI0}", libero, key)(clients)
            results[f"c{clients}"] = measure_calls(call, groups, clients, args.duration)
            results[f"c{clients}"]["loadavg_1m"] = os.getloadavg()[0]
            print(f"openpi door, {clients} clients:", results[f"c{clients}"], flush=True)
    finally:
        stop(procs)
    emit(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="openvla-tiny")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--clients", default="8", help="one count; with --door openpi, a comma-separated list")
    ap.add_argument("--door", choices=("rest", "openpi"), default="rest")
    args = ap.parse_args()
    if args.door == "openpi":
        return openpi_door(args)
    args.clients = int(args.clients)
    env = setup(args.model)
    body = {"model": args.model, "image": png_b64(64, 64), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}, "safety": {"mode": "clamp"}}
    key = bench_key(env)
    results: dict = {"bench": "cpu_budget", "model": args.model, "clients": args.clients, "machine": machine()}
    port = free_port()
    procs = start_ours(env, args.model, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        wait_ready(url, key, args.model)
        groups = dict(zip(("web", "gpu_worker", "safety_worker"), (p.pid for p in procs), strict=True))
        results["ours"] = measure(f"{url}/v1/inference", body, {"Authorization": f"Bearer {key}"}, groups,
                                  args.clients, args.duration)
        print("ours ", results["ours"])
    finally:
        stop(procs)
    port = free_port()
    procs = start_naive(env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/infer")
        groups = dict(zip(("worker", "web"), (p.pid for p in procs), strict=True))
        results["naive"] = measure(f"{url}/infer", {k: body[k] for k in ("image", "instruction")}, {}, groups,
                                   args.clients, args.duration)
        print("naive", results["naive"])
    finally:
        stop(procs)
    emit(results)


if __name__ == "__main__":
    main()
