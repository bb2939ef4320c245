"""Replays against interactive traffic, in one run:

1. raw: the worker's batched throughput on its own (the GPU worker's batcher, in process, saturated);
2. replay alone: steps/s of a replay through the whole service (API, slice driver, batcher, safety, rows);
3. interactive p99 of the sync path for a client at a steady 10 requests/s, idle and with a replay running.

    python -m ops.bench.replay [--steps 600] [--rate 10] [--duration 30] [--rounds 3]

Targets (issue 6): replay alone >= 90% of raw; interactive p99 with a replay <= 1.5x idle.
Starts its own gunicorn, GPU worker and safety worker (like ops/bench/pipeline.py). Last line: one JSON object.

The measurements run in interleaved rounds, because this host's speed drifts by tens of percent within
minutes and one long measurement per figure let the drift decide the ratio: each round times raw, then a
replay alone (their ratio is that round's), then an idle window and a window with a replay running (order
flipped each round). replay_vs_raw is the median of the rounds' ratios; the interactive latencies are pooled
over the rounds' windows of each kind, and p99_ratio compares the pooled p99s. The replay beside the client
is canceled when its window ends, so every busy window has a replay running throughout.
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


def bench_policy():
    import torch

    from workers.policies.registry import load_policy
    from workers.settings import get_settings

    threads = get_settings().torch_cpu_threads
    if threads > 0:  # the same thread count the GPU worker uses, so "raw" is this worker's own ceiling
        torch.set_num_threads(threads)
    return load_policy(MODEL, None, model_dir=ROOT / ".data" / "models")


def raw_throughput(policy, batch: int, seconds: float) -> float:
    """The batcher saturated in this process: the worker's own ceiling (the service's processes sit idle)."""
    from ops.bench.batching import run_setting

    return run_setting(policy, batch, 5.0, clients=2 * batch, duration=seconds)["throughput_rps"]


def start_replay(url: str, headers: dict, name: str) -> str:
    body = {"model": MODEL, "dataset": {"path": name}, "robot_config": {"type": "widowx_250"}}
    r = requests.post(f"{url}/v1/replays", json=body, headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()["id"]


def wait_replay(url: str, headers: dict, rid: str, timeout: float = 600.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cur = requests.get(f"{url}/v1/replays/{rid}", headers=headers, timeout=30).json()
        if cur["state"] not in ("queued", "running"):
            return cur
        time.sleep(0.25)
    raise TimeoutError("replay did not finish")


def wait_running(url: str, headers: dict, rid: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cur = requests.get(f"{url}/v1/replays/{rid}", headers=headers, timeout=30).json()
        if cur["state"] != "queued" and cur["progress"]["done_steps"] > 0:
            return
        time.sleep(0.1)
    raise TimeoutError("replay did not start")


def steady_client(url: str, headers: dict, rate: float, duration: float,
                  stages: dict[str, list[float]] | None = None) -> list[float]:
    """Open loop: one request every 1/rate s, each on its own thread, whatever the previous one is doing;
    returns the latencies (s) of the answered requests and raises if any went unanswered. With `stages`,
    each answer's per-stage figures (queue wait, inference, safety, total) are appended to it, to tell
    where a slower request spent the extra time."""
    body = {"model": MODEL, "image": png_b64(64, 64), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}}
    lat: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.perf_counter()
        r = requests.post(f"{url}/v1/inference", json=body, headers=headers, timeout=60)
        if r.status_code == 200:
            perf = r.json().get("performance") or {}
            with lock:
                lat.append(time.perf_counter() - t0)
                for name, value in perf.items():
                    if stages is not None and isinstance(value, int | float):
                        stages.setdefault(name, []).append(float(value))

    threads, t_start = [], time.perf_counter()
    for i in range(int(rate * duration)):
        time.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
        threads.append(threading.Thread(target=one))
        threads[-1].start()
    for t in threads:
        t.join()
    if len(lat) != len(threads):
        raise RuntimeError(f"{len(threads) - len(lat)} of {len(threads)} interactive requests failed")
    return lat


def replay_rate(state: dict) -> float:
    return state["progress"]["done_steps"] / max(_elapsed(state), 1e-9)


def _elapsed(state: dict) -> float:
    from datetime import datetime

    started, finished = (datetime.fromisoformat(state[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def busy_window(url: str, headers: dict, name: str, rate: float, seconds: float,
                stages: dict[str, list[float]]) -> tuple[list[float], float]:
    """Interactive latencies while a replay runs throughout, and that replay's steps/s (it is canceled after)."""
    rid = start_replay(url, headers, name)
    wait_running(url, headers, rid)
    t0, before = time.monotonic(), requests.get(f"{url}/v1/replays/{rid}", headers=headers, timeout=30).json()
    lat = steady_client(url, headers, rate, seconds, stages)
    after = requests.get(f"{url}/v1/replays/{rid}", headers=headers, timeout=30).json()
    rate_steps = (after["progress"]["done_steps"] - before["progress"]["done_steps"]) / (time.monotonic() - t0)
    if after["state"] in ("queued", "running"):
        requests.delete(f"{url}/v1/replays/{rid}", headers=headers, timeout=30).raise_for_status()
        wait_replay(url, headers, rid)
    else:  # it ended inside the window: the tail of the window ran without a replay
        raise RuntimeError("the busy replay ended before its window; raise --steps")
    return lat, rate_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=30.0,
                    help="seconds of interactive traffic per kind (idle, with a replay), over all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--raw-seconds", type=float, default=5.0, help="seconds of the raw measurement per round")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-background", type=int, default=None,
                    help="BATCH_MAX_BACKGROUND for the worker (default: the shipped setting)")
    ap.add_argument("--no-cadence-hold", action="store_true",
                    help="BATCH_HOLD_FOR_CADENCE=0 for the worker: replay passes never wait for a due request")
    args = ap.parse_args()
    env = {**P.setup(MODEL), "REPLAY_DATA_ROOT": str(DATASETS), "REPLAY_SHARED_DIR": SHARED,
           "BATCH_MAX_SIZE": str(args.batch)}
    if args.max_background is not None:
        env["BATCH_MAX_BACKGROUND"] = str(args.max_background)
    if args.no_cadence_hold:
        env["BATCH_HOLD_FOR_CADENCE"] = "0"
    key = P.bench_key(env)
    policy = bench_policy()
    window = args.duration / args.rounds
    alone_name = write_npz(args.steps, "alone.npz")
    # Enough steps that the replay outlives its window at the raw rate (it is canceled when the window ends).
    busy_name = write_npz(max(args.steps, int(window * 400)), "busy.npz")
    port = free_port()
    procs = P.start_ours(env, MODEL, port)
    out: dict = {"bench": "replay", "model": MODEL, "machine": machine(), "batch": args.batch,
                 "rounds": args.rounds, "max_background": env.get("BATCH_MAX_BACKGROUND", "shipped default"),
                 "cadence_hold": not args.no_cadence_hold}
    rounds: list[dict] = []
    idle: list[float] = []
    busy: list[float] = []
    stages: dict[str, dict[str, list[float]]] = {"idle": {}, "busy": {}}
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        wait_http(f"{url}/health")
        P.wait_ready(url, key, MODEL)
        steady_client(url, headers, args.rate, 2.0)  # warm-up: first requests pay connection and cache set-up
        for r in range(args.rounds):
            raw = raw_throughput(policy, args.batch, args.raw_seconds)
            alone = replay_rate(wait_replay(url, headers, start_replay(url, headers, alone_name)))
            windows = {}
            for kind in (("idle", "busy") if r % 2 == 0 else ("busy", "idle")):
                if kind == "idle":
                    windows["idle"] = steady_client(url, headers, args.rate, window, stages["idle"])
                else:
                    windows["busy"], windows["busy_rate"] = busy_window(url, headers, busy_name, args.rate, window,
                                                                        stages["busy"])
            idle += windows["idle"]
            busy += windows["busy"]
            rounds.append({"raw_steps_per_s": round(raw, 2), "replay_alone_steps_per_s": round(alone, 2),
                           "replay_vs_raw": round(alone / raw, 3),
                           "replay_with_interactive_steps_per_s": round(windows["busy_rate"], 2),
                           "idle_p99_ms": summary_ms(windows["idle"])["p99_ms"],
                           "with_replay_p99_ms": summary_ms(windows["busy"])["p99_ms"]})
            print(f"round {r}: {rounds[-1]}", flush=True)
    finally:
        stop(procs)
    out["rounds_detail"] = rounds
    out["raw_steps_per_s"] = round(float(np.mean([x["raw_steps_per_s"] for x in rounds])), 2)
    out["replay_alone_steps_per_s"] = round(float(np.mean([x["replay_alone_steps_per_s"] for x in rounds])), 2)
    out["replay_vs_raw"] = round(float(np.median([x["replay_vs_raw"] for x in rounds])), 3)
    out["replay_with_interactive_steps_per_s"] = round(
        float(np.mean([x["replay_with_interactive_steps_per_s"] for x in rounds])), 2)
    out["interactive_idle"], out["interactive_with_replay"] = summary_ms(idle), summary_ms(busy)
    out["stage_p50_ms"] = {kind: {k: round(float(np.median(v)), 2) for k, v in per.items()}
                           for kind, per in stages.items()}
    out["p99_ratio"] = round(out["interactive_with_replay"]["p99_ms"] / out["interactive_idle"]["p99_ms"], 3)
    out["targets_met"] = {"replay_vs_raw>=0.9": out["replay_vs_raw"] >= 0.9, "p99_ratio<=1.5": out["p99_ratio"] <= 1.5}
    for k in ("raw_steps_per_s", "replay_alone_steps_per_s", "replay_vs_raw", "interactive_idle",
              "interactive_with_replay", "stage_p50_ms", "p99_ratio", "targets_met"):
        print(f"{k}: {out.get(k)}")
    emit(out)


if __name__ == "__main__":
    main()
