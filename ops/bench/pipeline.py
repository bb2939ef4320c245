"""Sync-path overhead: our POST /v1/inference against an in-process call of the same policy, and against a
naive Flask + Celery chain + AsyncResult.get (ops/bench/naive_chain.py), at 8 and 32 concurrent clients.

    python -m ops.bench.pipeline [--model openvla-tiny] [--duration 10]

Starts its own processes (gunicorn, a GPU worker, the safety worker, the naive worker and web) against
DATABASE_URL / REDIS_URL or the embedded servers, in a scratch database and Redis db 8. Each client count
is measured in `--rounds` slices per path, taken in turns with an in-process sample in every round, so the
host's drift falls on both paths alike. Overhead is a path's latency minus the in-process policy call's
latency (same rounds) at the same percentile. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
import requests

from ops import stack
from ops.bench.common import (
    ROOT,
    closed_loop,
    emit,
    free_port,
    machine,
    png_b64,
    spawn,
    stop,
    summary_ms,
    wait_http,
)
from ops.procfile import gpu_worker_argv, safety_worker_argv

LOGS = ROOT / ".data" / "bench-logs"


def setup(model: str) -> dict[str, str]:
    db_url = stack.ensure_database(stack.ensure_postgres(), "vlaapi_bench", recreate=True)
    base = stack.ensure_redis().rsplit("/", 1)[0]
    redis_url, naive_url = f"{base}/8", f"{base}/7"
    for url in (redis_url, naive_url):
        redis.Redis.from_url(url).flushdb()
    from workers.store.migrate import upgrade

    upgrade(db_url)
    model_dir = ROOT / ".data" / "models"
    if not (model_dir / model / "config.json").exists():
        from workers.policies.presets import build_tiny_checkpoints

        build_tiny_checkpoints(model_dir, [model])
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "NAIVE_REDIS_URL": naive_url, "ENABLED_MODELS": model,
            "MODEL_DIR": str(model_dir), "NAIVE_MODEL": model, "LOG_LEVEL": "WARNING",
            # a scratch stack on this machine: the web accepts the development pepper here only
            "VLAAPI_ENV": "development"}


def bench_key(env: dict[str, str]) -> str:
    import os

    os.environ.update(env)
    from web.accounts import service
    from workers.settings import get_settings
    from workers.store.db import session_scope
    from workers.store.models import Tier

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        s.add(Tier(name="bench", requests_per_minute=None, requests_per_day=None, requests_per_month=None,
                   max_in_flight=None))
        s.flush()
        customer = service.create_customer(s, f"bench-{uuid.uuid4().hex[:6]}", "bench")
        _, key = service.create_key(s, customer, settings.api_key_pepper)
    return key


def in_process(model: str, env: dict[str, str], body: dict) -> Callable[[int], list[float]]:
    """The policy loaded in this process; returns `sample(n)`: n back-to-back calls' latencies (seconds)."""
    from workers.gpu.decode import decode_image
    from workers.policies.base import Observation
    from workers.policies.registry import load_policy

    policy = load_policy(model, None, model_dir=Path(env["MODEL_DIR"]))
    obs = Observation(images={policy.spec.cameras[0]: decode_image("image", body["image"])},
                      instruction=body["instruction"])
    for _ in range(10):
        policy.predict([obs])

    def sample(n: int) -> list[float]:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            policy.predict([obs])
            lat.append(time.perf_counter() - t0)
        return lat

    return sample


def start_ours(env: dict[str, str], model: str, port: int) -> list:
    LOGS.mkdir(parents=True, exist_ok=True)
    web = ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "32", "--bind",
           f"127.0.0.1:{port}", "web.app:create_app()"]
    return [spawn(web, env, LOGS / "ours-web.log"),
            spawn(gpu_worker_argv(model, concurrency=32), {**env, "WORKER_MODEL": model}, LOGS / "ours-gpu.log"),
            spawn(safety_worker_argv(concurrency=16), env, LOGS / "ours-safety.log")]


def start_naive(env: dict[str, str], port: int) -> list:
    worker = ["celery", "-A", "ops.bench.naive_chain", "worker", "-P", "threads", "-c", "32", "-Q", "naive",
              "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]
    web = ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "32", "--bind",
           f"127.0.0.1:{port}", "ops.bench.naive_chain:web"]
    return [spawn(worker, env, LOGS / "naive-worker.log"), spawn(web, env, LOGS / "naive-web.log")]


def wait_ready(url: str, key: str, model: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        models = requests.get(f"{url}/v1/models/list", headers={"Authorization": f"Bearer {key}"}, timeout=5).json()
        if any(m["name"] == model and m["ready"] for m in models.get("models", [])):
            return
        time.sleep(0.3)
    raise TimeoutError("GPU worker never became ready; see .data/bench-logs")


def load(url: str, body: dict, headers: dict, clients: int, duration: float) -> dict:
    sessions = [requests.Session() for _ in range(clients)]

    def call(i: int) -> None:
        r = sessions[i].post(url, json=body, headers=headers, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])

    return closed_loop(call, clients, duration, warmup_s=0.5, keep=True)


def interleaved(paths: dict[str, tuple], clients: int, duration: float, rounds: int,
                baseline: Callable[[int], list[float]]) -> tuple[dict[str, dict], list[float]]:
    """Every path for duration/rounds seconds per round, the order flipped each round, with an in-process
    sample in each round too; latencies pooled per path. On a shared machine the speed of the host drifts
    by tens of percent within minutes: slices taken in turns see the same drift, one long run each does
    not."""
    pooled: dict[str, dict] = {name: {"lat": [], "errors": 0} for name in paths}
    base: list[float] = []
    names = list(paths)
    for r in range(rounds):
        base += baseline(max(20, 200 // rounds))
        for name in names if r % 2 == 0 else names[::-1]:
            res = load(*paths[name], clients, duration / rounds)
            pooled[name]["lat"] += res["latencies_s"]
            pooled[name]["errors"] += res["errors"]
    out = {name: {"clients": clients, "throughput_rps": round(len(p["lat"]) / duration, 2), "errors": p["errors"],
                  **summary_ms(p["lat"])} for name, p in pooled.items()}
    return out, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="openvla-tiny")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=4,
                    help="slices per path and client count, taken in turns (1: one run of each)")
    args = ap.parse_args()
    env = setup(args.model)
    body = {"model": args.model, "image": png_b64(64, 64), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}, "safety": {"mode": "clamp"}}
    key = bench_key(env)
    baseline = in_process(args.model, env, body)
    ours_port, naive_port = free_port(), free_port()
    procs = start_ours(env, args.model, ours_port) + start_naive(env, naive_port)
    results: dict = {"bench": "pipeline", "model": args.model, "machine": machine(), "rounds": args.rounds}
    base_all: list[float] = []
    try:
        ours, naive = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{naive_port}"
        wait_http(f"{ours}/health")
        wait_http(f"{naive}/infer")
        wait_ready(ours, key, args.model)
        headers = {"Authorization": f"Bearer {key}"}
        naive_body = {k: body[k] for k in ("image", "instruction")}
        paths = {"ours_sync": (f"{ours}/v1/inference", body, headers),
                 "naive_chain": (f"{naive}/infer", naive_body, {})}
        for clients in [int(c) for c in args.clients.split(",")]:
            runs, base_lat = interleaved(paths, clients, args.duration, args.rounds, baseline)
            base_all += base_lat
            base = summary_ms(base_lat)  # the in-process call sampled in the same rounds
            for name, r in runs.items():
                r["overhead_p50_ms"] = round(r["p50_ms"] - base["p50_ms"], 3)
                r["overhead_p99_ms"] = round(r["p99_ms"] - base["p99_ms"], 3)
                r["in_process"] = base
                results[f"{name}_c{clients}"] = r
                print(f"{name:12s} clients={clients:3d} {r}")
    finally:
        stop(procs)
    results["in_process"] = summary_ms(base_all)
    print(f"in-process {args.model}: {results['in_process']}")
    results["ratios"] = ratios(results)
    emit(results)


def ratios(results: dict) -> dict:
    """Issue 15's two targets as ratios: overhead ours / naive at 1 client (p50, p99; target <= 1) and
    throughput ours / naive at 8 clients (target >= 2), for whichever of those client counts ran."""
    out = {}
    ours, naive = results.get("ours_sync_c1"), results.get("naive_chain_c1")
    if ours and naive:
        for q in ("p50", "p99"):
            out[f"overhead_{q}_c1_ours_over_naive"] = round(ours[f"overhead_{q}_ms"] / naive[f"overhead_{q}_ms"], 3)
    ours, naive = results.get("ours_sync_c8"), results.get("naive_chain_c8")
    if ours and naive and naive["throughput_rps"]:
        out["throughput_c8_ours_over_naive"] = round(ours["throughput_rps"] / naive["throughput_rps"], 3)
    return out


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
