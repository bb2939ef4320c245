"""Runs INSIDE the lerobot06 reference env: LeRobot 0.6.1's real-time chunking (its RTCProcessor driven by
PI05Policy.predict_action_chunk's RTC keyword arguments) on pi05-tiny.
Usage: python lerobot06_pi05_rtc_ref.py MODEL_DIR INPUTS.npz OUT.npz

The cases are run by the pi0 RTC runner's `run_case` (chunk A, its leftover, chunk B unguided / as shipped /
with the velocity differentiated: its adaptation 4) on the pi0.5 runner's policy (its adaptations 1-3); only
the batch (images of each item's own size) is this file's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot06_pi0_rtc_ref as rtc_ref  # noqa: E402
from lerobot06_pi05_ref import CAMERAS, dataset_stats, make_policy, patch_tiny_sizes, tiny_tokenizer  # noqa: E402


def batch_of(inp: dict, pre, item: int) -> dict:
    present = [c for c in CAMERAS if inp[f"present_{c}"][item]]
    batch = {f"observation.images.{c}": torch.from_numpy(inp[f"image_{item}_{c}"][None]).permute(0, 3, 1, 2).float()
             / 255.0 for c in present}
    batch["observation.state"] = torch.from_numpy(inp["state"][[item]]).float()
    batch["task"] = [str(inp["instructions"][item])]
    return pre(batch)


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    cfg = json.loads((model_dir_p / "config.json").read_text())
    patch_tiny_sizes(cfg["vlaapi_pi0_sizes"])
    tiny_tokenizer(model_dir_p)
    inp = dict(np.load(inputs_path))
    policy, pre, post, _ = make_policy(model_dir_p, cfg, dataset_stats(model_dir_p), "float32")
    cases = [rtc_ref.run_case(policy, pre, post, inp, c, batch=batch_of) for c in range(len(inp["case_item"]))]
    out = rtc_ref.collect(cases, int(inp["case_noise_b"].shape[1]))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
