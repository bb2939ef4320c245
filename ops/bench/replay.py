"""Replays against interactive traffic, in one run:

1. raw: the worker's batched throughput on its own (the GPU worker's batcher, in process, saturated);
2. replay alone: steps/s of a replay through the whole service (API, slice driver, batcher, safety, rows);
3. interactive p99 of the sync path for a client at a steady 10 requests/s, idle and with a replay running.

    python -m ops.bench.replay [--steps 600] [--rate 10] [--duration 30]

Targets (issue 6): replay alone >= 90% of raw; interactive p99 with a replay <= 1.5x idle.
Starts its own gunicorn, GPU worker and safety worker (like ops/bench/pipeline.py). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import requests

from ops.bench import pipeline as P
from ops.bench.common import ROOT, emit, free_port, machine, png_b64, stop, summary_ms, wait_http

MODEL = "openvla-tiny"
DATASETS = ROOT / ".data" / "bench-datasets"
SHARED = "_bench"  # the datasets sit in a shared folder (REPLAY_SHARED_DIR): any bench customer may replay them


def write_npz(steps: int, name: str) -> str:
    rng = np.random.default_rng(0)
    (DATASETS / SHARED).mkdir(parents=True, exist_ok=True)
    np.savez(DATASETS / SHARED / name, images=rng.integers(0, 255, (steps, 64, 64, 3), dtype=np.uint8),
             actions=rng.normal(0, 0.01, (steps, 7)), instruction=np.array("pick up the red block"),
             episode_index=np.arange(steps) // 100)
    return name


def raw_throughput(env: dict[str, str], batch: int, seconds: float = 8.0) -> float:
    import torch

    from ops.bench.batching import run_setting
    from workers.policies.registry import load_policy
    from workers.settings import get_settings

    threads = get_settings().torch_cpu_threads
    if threads > 0:  # the same thread count the GPU worker uses, so "raw" is this worker's own ceiling
        torch.set_num_threads(threads)
    policy = load_policy(MODEL, None, model_dir=ROOT / ".data" / "models")
    return run_setting(policy, batch, 5.0, clients=2 * batch, duration=seconds)["throughput_rps"]


def run_replay(url: str, headers: dict, name: str, timeout: float = 600.0) -> dict:
    body = {"model": MODEL, "dataset": {"path": name}, "robot_config": {"type": "widowx_250"}}
    rep = requests.post(f"{url}/v1/replays", json=body, headers=headers, timeout=30).json()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cur = requests.get(f"{url}/v1/replays/{rep['id']}", headers=headers, timeout=30).json()
        if cur["state"] not in ("queued", "running"):
            return cur
        time.sleep(0.25)
    raise TimeoutError("replay did not finish")


def steady_client(url: str, headers: dict, rate: float, duration: float, stop_flag=None) -> dict:
    """Open loop: one request every 1/rate s, each on its own thread, whatever the previous one is doing."""
    body = {"model": MODEL, "image": png_b64(64, 64), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}}
    lat: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.perf_counter()
        r = requests.post(f"{url}/v1/inference", json=body, headers=headers, timeout=60)
        if r.status_code == 200:
            with lock:
                lat.append(time.perf_counter() - t0)

    threads, t_start = [], time.perf_counter()
    for i in range(int(rate * duration)):
        if stop_flag is not None and stop_flag.is_set():
            break
        time.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
        threads.append(threading.Thread(target=one))
        threads[-1].start()
    for t in threads:
        t.join()
    return {**summary_ms(lat), "sent": len(threads)}


def replay_rate(state: dict) -> float:
    return state["progress"]["done_steps"] / max(_elapsed(state), 1e-9)


def _elapsed(state: dict) -> float:
    from datetime import datetime

    started, finished = (datetime.fromisoformat(state[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-background", type=int, default=None,
                    help="BATCH_MAX_BACKGROUND for the worker (default: the shipped setting)")
    args = ap.parse_args()
    env = {**P.setup(MODEL), "REPLAY_DATA_ROOT": str(DATASETS), "REPLAY_SHARED_DIR": SHARED,
           "BATCH_MAX_SIZE": str(args.batch)}
    if args.max_background is not None:
        env["BATCH_MAX_BACKGROUND"] = str(args.max_background)
    key = P.bench_key(env)
    raw = raw_throughput(env, args.batch)
    port = free_port()
    procs = P.start_ours(env, MODEL, port)
    out: dict = {"bench": "replay", "model": MODEL, "machine": machine(), "batch": args.batch,
                 "max_background": env.get("BATCH_MAX_BACKGROUND", "shipped default"), "raw_steps_per_s": raw}
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        wait_http(f"{url}/health")
        P.wait_ready(url, key, MODEL)
        steady_client(url, headers, args.rate, 2.0)  # warm-up: first requests pay connection and cache set-up
        alone = run_replay(url, headers, write_npz(args.steps, "alone.npz"))
        out["replay_alone_steps_per_s"] = round(replay_rate(alone), 2)
        out["replay_vs_raw"] = round(out["replay_alone_steps_per_s"] / raw, 3)
        out["interactive_idle"] = steady_client(url, headers, args.rate, args.duration)
        big = write_npz(args.steps * 4, "busy.npz")
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(run_replay(url, headers, big)))
        runner.start()
        time.sleep(1.0)
        out["interactive_with_replay"] = steady_client(url, headers, args.rate, args.duration)
        runner.join()
        out["replay_with_interactive_steps_per_s"] = round(replay_rate(result), 2)
        out["p99_ratio"] = round(out["interactive_with_replay"]["p99_ms"] / out["interactive_idle"]["p99_ms"], 3)
    finally:
        stop(procs)
    for k in ("raw_steps_per_s", "replay_alone_steps_per_s", "replay_vs_raw", "interactive_idle",
              "interactive_with_replay", "p99_ratio"):
        print(f"{k}: {out.get(k)}")
    emit(out)


if __name__ == "__main__":
    main()
