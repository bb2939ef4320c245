"""Policy latency benchmark: p50/p90 per batch size and the memory-bandwidth floor.

    python -m ops.bench.policy_latency --tiny                 # tiny presets, CPU-friendly
    python -m ops.bench.policy_latency --bandwidth-gbs 3350   # full-size random weights (CUDA, bf16)

Full size builds the real architectures (the OpenVLA-7B config, transformers' default PI0Config) with
random weights directly on the device; prompts use the tiny tokenizers (their ids are valid in the real
vocabularies; the OpenVLA prompt comes out a few tokens shorter than with Llama-2's tokenizer).
The floor is the time to stream the weights each batch must read: OpenVLA reads vision + projector once
and the LLM once per generated token (7); pi0 reads the VLM once and the action expert once per flow
step. Beside ours, each batch size also times the stock path (ops/bench/stock.py: transformers' generate with
a dynamic cache for OpenVLA, transformers' sample_actions for pi0) on the same inputs and prints ours/stock.
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ops.bench.stock import stock_call
from workers.policies.base import Observation, Policy
from workers.policies.checkpoint import default_dtype
from workers.policies.common import load_tokenizer
from workers.policies.devices import dtype_name, resolve_device, resolve_dtype
from workers.policies.openvla.config import OpenVLAConfig
from workers.policies.openvla.model import OpenVLAModel
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_flow import keep_fp32_islands
from workers.policies.presets import build_tiny_checkpoints
from workers.policies.registry import load_policy
from workers.policies.tiny import PI0_NORM_STATS, openvla_tiny_config

INSTRUCTIONS = ["pick up the red block", "put the spoon on the towel", "open the drawer then close it slowly"]
FULL_LLAMA = {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "pad_token_id": 32000}


def full_openvla(tiny_dir: Path, device: torch.device, dtype: torch.dtype) -> Policy:
    raw = openvla_tiny_config()
    raw.pop("timm_model_kwargs")  # the real towers: ViT-L/14 DINOv2 + So400m/14 SigLIP
    raw["text_config"].update(FULL_LLAMA)
    raw.update(pad_token_id=32000, default_unnorm_key="bridge_orig")
    cfg = OpenVLAConfig.from_dict(raw)
    with torch.device(device), default_dtype(dtype):
        model = OpenVLAModel(cfg).eval()
    return OpenVLAPolicy("openvla-7b-random", cfg, model, load_tokenizer(tiny_dir / "openvla-tiny"), device)


def full_pi0(tiny_dir: Path, device: torch.device, dtype: torch.dtype) -> Policy:
    from transformers import PI0Config, PI0ForConditionalGeneration

    cfg = PI0Config()
    cfg._attn_implementation = "sdpa"
    with torch.device(device), default_dtype(dtype):
        model = PI0ForConditionalGeneration(cfg).eval()
    keep_fp32_islands(model)
    return Pi0Policy("pi0-random", model, load_tokenizer(tiny_dir / "pi0-tiny"), PI0_NORM_STATS, device)


def observations(policy: Policy, n: int) -> list[Observation]:
    """A mixed batch: different instructions, 1..n_cams cameras, per-row seeds for pi0."""
    rng = np.random.default_rng(0)
    spec = policy.spec
    out = []
    for i in range(n):
        cams = spec.cameras[: 1 + i % len(spec.cameras)]
        images = {c: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for c in cams}
        state = rng.normal(size=spec.state_dim) if spec.state_dim else None
        options: dict[str, Any] = {"seed": i} if spec.family == "pi0" else {}
        out.append(Observation(images=images, instruction=INSTRUCTIONS[i % 3], state=state, options=options))
    return out


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def floor_bytes(policy: Policy) -> tuple[int, int]:
    """(total weight bytes, bytes one batch must stream through memory at least once per pass)."""
    if isinstance(policy, OpenVLAPolicy):
        llm = _nbytes(policy.model.language_model)
        total = _nbytes(policy.model)
        return total, (total - llm) + llm * policy.spec.action_dim
    model = policy.model
    dit = model.model.dit
    expert = _nbytes(dit) - dit.embed_tokens.weight.numel() * dit.embed_tokens.weight.element_size()
    total = _nbytes(model)
    return total, (total - _nbytes(dit)) + expert * model.config.num_inference_steps


def _timed(fn: Callable[[list[Observation]], Any], obs: list[Observation],
           stages: dict[str, list[float]] | None = None) -> float:
    t0 = time.perf_counter()
    out = fn(obs)  # returns host data, so the device work is finished when it returns
    ms = (time.perf_counter() - t0) * 1000.0
    if stages is not None and out:  # the policy's own laps (preprocess, vision, prefill, decode...) per pass
        for name, value in (getattr(out[0], "timings_ms", None) or {}).items():
            stages.setdefault(name, []).append(float(value))
    return ms


def _p(samples: list[float], q: int) -> float:
    return round(float(np.percentile(samples, q)), 2)


def time_policy(policy: Policy, batch_sizes: list[int], iters: int, warmup: int,
                stock: bool = True) -> dict[str, dict[str, float]]:
    """Ours (policy.predict) and the stock path on the same inputs, alternating call by call so a busy
    machine's drift lands on both alike."""
    out = {}
    fns = [policy.predict] + ([stock_call(policy)] if stock else [])
    for bs in batch_sizes:
        obs = observations(policy, bs)
        for o in obs:
            policy.validate(o)
        for _ in range(warmup):
            for fn in fns:
                fn(obs)
        samples: list[list[float]] = [[] for _ in fns]
        stages: dict[str, list[float]] = {}
        for _ in range(iters):
            for i, (fn, acc) in enumerate(zip(fns, samples, strict=True)):
                acc.append(_timed(fn, obs, stages if i == 0 else None))
        row: dict[str, Any] = {"p50_ms": _p(samples[0], 50), "p90_ms": _p(samples[0], 90),
                               "stages_p50_ms": {k: _p(v, 50) for k, v in stages.items()}}
        line = f"  {policy.spec.name:20s} batch {bs:3d}: p50 {row['p50_ms']:9.2f} ms  p90 {row['p90_ms']:9.2f} ms"
        if stock:
            row.update(stock_p50_ms=_p(samples[1], 50), stock_p90_ms=_p(samples[1], 90))
            row["ratio_p50"] = round(row["p50_ms"] / row["stock_p50_ms"], 3)
            line += f"  | stock p50 {row['stock_p50_ms']:9.2f} ms  ours/stock {row['ratio_p50']:.3f}"
        out[str(bs)] = row
        print(line, flush=True)
        print("      stages p50 (ms): " + ", ".join(f"{k} {v}" for k, v in row["stages_p50_ms"].items()), flush=True)
    return out


def bench_one(policy: Policy, args: argparse.Namespace, bandwidth: float, build_s: float) -> dict[str, Any]:
    total, streamed = floor_bytes(policy)
    floor_ms = streamed / (bandwidth * 1e9) * 1000.0
    print(f"{policy.spec.name}: {total / 1e9:.4f} GB weights ({policy.spec.dtype}), floor {floor_ms:.4f} ms "
          f"at {bandwidth} GB/s, built in {build_s:.1f} s", flush=True)
    return {"weight_bytes": total, "streamed_bytes_per_batch": streamed, "floor_ms": round(floor_ms, 4),
            "build_s": round(build_s, 2),
            "batches": time_policy(policy, args.batch_sizes, args.iters, args.warmup, stock=not args.no_stock)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="policy latency benchmark")
    p.add_argument("--tiny", action="store_true", help="benchmark the tiny presets (loaded from disk)")
    p.add_argument("--models", default="openvla,pi0")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-sizes", default=[1, 4, 8, 16], type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="memory bandwidth for the floor; default 3350 (H100 SXM HBM3) on CUDA, 20 on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-stock", action="store_true", help="skip the stock-path timings (transformers' own loops)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    bandwidth = args.bandwidth_gbs or (3350.0 if device.type == "cuda" else 20.0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    result: dict[str, Any] = {"device": str(device), "device_name": name, "dtype": dtype_name(dtype),
                              "tiny": args.tiny, "bandwidth_gbs": bandwidth, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dir = Path(tmp)
        build_tiny_checkpoints(tiny_dir, ("openvla-tiny", "pi0-tiny"))
        for family in args.models.split(","):
            t0 = time.perf_counter()
            if args.tiny:
                policy = load_policy(f"{family}-tiny", None, model_dir=tiny_dir, dtype=args.dtype, device=args.device)
            else:
                policy = (full_openvla if family == "openvla" else full_pi0)(tiny_dir, device, dtype)
            result["models"][policy.spec.name] = bench_one(policy, args, bandwidth, time.perf_counter() - t0)
            del policy
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
