"""What proving a checkpoint at load costs (issue 25): hashing throughput of the tensor digests, and the
tiny presets' load time with and without the fingerprint checks.

    python -m ops.bench.fingerprint [--mb 512] [--repeats 3]

The hashing runs in a background thread while the weights load, so on a machine with spare cores its cost
is hidden behind the load; the figures here are the hashing alone (what it adds on a machine with none).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from workers.policies import fingerprint
from workers.policies.presets import build_tiny_checkpoints
from workers.policies.registry import load_policy


def hashing_rate(mb: int, repeats: int) -> tuple[float, float]:
    """(seconds, GB/s) to digest a `mb` MB checkpoint of 64 MB tensors, best of `repeats` (page cache warm)."""
    with tempfile.TemporaryDirectory() as tmp:
        n = max(1, mb // 64)
        tensors = {f"layer.{i}.weight": torch.randn(4096, 4096) for i in range(n)}  # 64 MB each
        (Path(tmp) / "config.json").write_text("{}")
        save_file(tensors, str(Path(tmp) / "model.safetensors"))
        size = sum(t.numel() * 4 for t in tensors.values())
        best = min(_timed(lambda: fingerprint.tensor_digests(Path(tmp))) for _ in range(repeats))
    return best, size / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def tiny_loads(repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (load s with fingerprint checks, load s without), best of `repeats`, fp32 CPU."""
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_checkpoints(Path(tmp), ["openvla-tiny", "pi0-tiny"])
        for name in ("openvla-tiny", "pi0-tiny"):
            times = {}
            for mode in ("require", "ignore"):
                times[mode] = min(_timed(lambda m=mode, n=name: load_policy(
                    n, None, model_dir=Path(tmp), dtype="float32", device="cpu", fingerprints=m))
                    for _ in range(repeats))
            out[name] = (times["require"], times["ignore"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    secs, rate = hashing_rate(args.mb, args.repeats)
    print(f"tensor digests: {args.mb} MB in {secs:.3f} s = {rate:.2f} GB/s "
          f"(openvla-7b's 15.2 GB at this rate: {15.2 / rate:.1f} s)")
    for name, (with_fp, without) in tiny_loads(args.repeats).items():
        print(f"{name}: load_policy {with_fp:.2f} s with fingerprint checks, {without:.2f} s without "
              f"(+{with_fp - without:.2f} s)")


if __name__ == "__main__":
    main()
