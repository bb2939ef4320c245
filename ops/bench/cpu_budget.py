"""Where a request's CPU goes: CPU milliseconds per request in each process of our stack and of the naive chain.

    python -m ops.bench.cpu_budget [--clients 8] [--duration 10]

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


def _cpu_by_group(groups: dict[str, int]) -> dict[str, float]:
    """CPU ms so far per named process group, plus every postgres and redis-server process on the machine."""
    out = dict.fromkeys([*groups, "postgres", "redis"], 0.0)
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
            out[name] += (utime + stime) * TICK_MS
    return out


def measure(url: str, body: dict, headers: dict, groups: dict[str, int], clients: int, duration: float) -> dict:
    sessions = [requests.Session() for _ in range(clients)]

    def call(i: int) -> None:
        r = sessions[i].post(url, json=body, headers=headers, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])

    closed_loop(call, clients, 1.0, warmup_s=0.0)  # warm every connection and thread first
    before = _cpu_by_group(groups)
    run = closed_loop(call, clients, duration, warmup_s=0.0)
    after = _cpu_by_group(groups)
    n = max(run["n"], 1)
    per_request = {k: round((after[k] - before[k]) / n, 2) for k in after}
    per_request["total"] = round(sum(per_request.values()), 2)
    return {"throughput_rps": run["throughput_rps"], "p50_ms": run["p50_ms"], "cpu_ms_per_request": per_request}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="openvla-tiny")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
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
