"""Dynamic batching in one GPU worker: batched against unbatched, same implementation, same run.

    python -m ops.bench.batching                      # tiny OpenVLA on CPU
    python -m ops.bench.batching --full --device cuda # OpenVLA-7B architecture, random bf16 weights

One MicroBatcher (the GPU worker's, workers/gpu/batcher.py) owns the policy; 1, 4, 8 and 16 client threads
submit back to back, as Celery task threads do. "Unbatched" is the same batcher with max_batch_size=1,
i.e. one request per forward pass as every robot-policy server we compete with. Prints throughput and
p50/p99 per setting; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ops.bench.common import ROOT, closed_loop, emit, machine
from workers.gpu.batcher import MicroBatcher


def _policy(args: argparse.Namespace):
    if args.full:
        import torch

        from ops.bench.policy_latency import full_openvla
        from workers.policies.devices import resolve_device, resolve_dtype

        device = resolve_device(args.device)
        return full_openvla(_tiny_dir().parent, device, resolve_dtype(args.dtype, device)), torch
    from workers.policies.registry import load_policy

    return load_policy("openvla-tiny", None, model_dir=_tiny_dir().parent), None


def _tiny_dir() -> Path:
    model_dir = ROOT / ".data" / "models"
    if not (model_dir / "openvla-tiny" / "config.json").exists():
        from workers.policies.presets import build_tiny_checkpoints

        build_tiny_checkpoints(model_dir, ["openvla-tiny"])
    return model_dir / "openvla-tiny"


def run_setting(policy, max_batch: int, wait_ms: float, clients: int, duration: float) -> dict:
    from ops.bench.policy_latency import observations

    batcher = MicroBatcher(lambda: policy, max_batch_size=max_batch, max_wait_ms=wait_ms, name="bench")
    batcher.start()
    batcher.wait_ready(60)
    obs = observations(policy, clients)
    try:
        result = closed_loop(lambda i: batcher.submit(obs[i]).result(timeout=60), clients, duration, warmup_s=1.0)
    finally:
        batcher.stop(5)
    sizes = batcher.stats()["batch_size_counts"]
    total = sum(sizes)
    result["mean_batch"] = round(sum(i * n for i, n in enumerate(sizes)) / total, 2) if total else 0.0
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="full-size OpenVLA-7B architecture (needs a GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args(argv)
    policy, _ = _policy(args)
    out: dict = {"bench": "batching", "model": policy.spec.name, "device": policy.spec.device,
                 "dtype": policy.spec.dtype, "machine": machine(), "max_batch": args.max_batch,
                 "wait_ms": args.wait_ms, "settings": {}}
    for clients in [int(c) for c in args.clients.split(",")]:
        batched = run_setting(policy, args.max_batch, args.wait_ms, clients, args.duration)
        single = run_setting(policy, 1, 0.0, clients, args.duration)
        speedup = batched["throughput_rps"] / single["throughput_rps"] if single["throughput_rps"] else None
        out["settings"][str(clients)] = {"batched": batched, "unbatched": single,
                                         "speedup": round(speedup, 2) if speedup else None}
        print(f"clients={clients:2d} batched {batched}\n           unbatched {single}  speedup {speedup:.2f}x",
              file=sys.stderr)
    lone = out["settings"].get("1")
    if lone:
        out["lone_client_added_p50_ms"] = round(lone["batched"]["p50_ms"] - lone["unbatched"]["p50_ms"], 3)
    emit(out)
    return out


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"took {time.time() - t0:.0f}s", file=sys.stderr)
