"""Latency of the safety stage (rule checks) on one action and on a 50-step chunk.

    .venv/bin/python -m ops.bench.safety [--iters 3000] [--classifier]

Each case calls safety.evaluate() end to end (config resolution, checks, result object), as the safety
worker does. The last printed line is one JSON object with p50/p90 in milliseconds per case.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import numpy as np

from safety import evaluate, load_alignment_checks
from safety.alignment.classifier import DEFAULT_PATH

CONFIG = {"type": "widowx_250", "obstacles": [{"min": [0.4, 0.1, 0.0], "max": [0.45, 0.2, 0.1]}]}
STATE = {"ee_position": [0.3, 0.0, 0.15], "ee_orientation": [0.0, 0.0, 0.0]}
STATS = {"q01": [-0.03] * 6 + [0.0], "q99": [0.03] * 6 + [1.0]}


def _chunk(steps: int, scale: float, seed: int = 0) -> np.ndarray:
    """A wandering chunk; scale 1.0 stays within WidowX limits, 3.0 trips speed and workspace limits."""
    rng = np.random.default_rng(seed)
    a = np.zeros((steps, 7))
    a[:, :3] = rng.uniform(-0.004, 0.004, (steps, 3)) * scale
    a[:, 3:6] = rng.uniform(-0.02, 0.02, (steps, 3)) * scale
    a[:, 6] = 1.0
    if scale > 1:
        a[::5, 0] = 0.12  # some steps far over the 0.05 m/step cap
    return a


def _time(fn: Callable[[], object], iters: int) -> dict[str, float]:
    for _ in range(min(200, iters)):
        fn()
    samples = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = time.perf_counter_ns() - t0
    ms = samples / 1e6
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description="safety stage latency")
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--classifier", action="store_true", help="also time the example torch classifier")
    args = ap.parse_args()
    one, chunk, bad = _chunk(1, 1.0), _chunk(50, 1.0), _chunk(50, 3.0)
    assert evaluate(chunk, robot_config=CONFIG, robot_state=STATE, mode="reject").decision == "allowed"
    assert evaluate(bad, robot_config=CONFIG, robot_state=STATE, mode="clamp").decision == "modified"
    cases: dict[str, Callable[[], object]] = {
        "rules_1_step": lambda: evaluate(one, robot_config=CONFIG, robot_state=STATE, action_stats=STATS,
                                         mode="reject"),
        "rules_50_steps": lambda: evaluate(chunk, robot_config=CONFIG, robot_state=STATE, action_stats=STATS,
                                           mode="reject"),
        "rules_50_steps_to_dict": lambda: evaluate(chunk, robot_config=CONFIG, robot_state=STATE,
                                                   action_stats=STATS, mode="reject").to_dict(),
        "clamp_50_steps_violating": lambda: evaluate(bad, robot_config=CONFIG, robot_state=STATE, mode="clamp"),
    }
    if args.classifier:
        checks = load_alignment_checks(True, str(DEFAULT_PATH), 0.5, [])
        cases["classifier_50_steps"] = lambda: evaluate(chunk, robot_config=CONFIG, robot_state=STATE,
                                                        mode="reject", alignment_checks=checks)
    results = {}
    for name, fn in cases.items():
        results[name] = _time(fn, args.iters)
        print(f"{name:28s} p50 {results[name]['p50_ms']:.4f} ms  p90 {results[name]['p90_ms']:.4f} ms")
    print(json.dumps({"bench": "safety", "iters": args.iters, "python": platform.python_version(),
                      "cpu": platform.processor() or platform.machine(), "results": results,
                      "target_p50_ms_50_steps": 1.0,
                      "meets_target": results["rules_50_steps"]["p50_ms"] <= 1.0}))


if __name__ == "__main__":
    main()
