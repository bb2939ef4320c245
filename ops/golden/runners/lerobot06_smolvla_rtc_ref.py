"""Runs INSIDE the lerobot06 reference env: LeRobot 0.6.1's real-time chunking (lerobot/policies/rtc) driving its
SmolVLA (`SmolVLAPolicy.predict_action_chunk(..., inference_delay=, prev_chunk_left_over=, execution_horizon=)`)
on smolvla-tiny, float32. Usage: python lerobot06_smolvla_rtc_ref.py MODEL_DIR INPUTS.npz OUT.npz

The cases, the three runs per case (unguided, as shipped: J = I, and with the velocity differentiated) and
their records are the pi0 RTC runner's (lerobot06_pi0_rtc_ref.run_case, adaptation 4 there); the policy, its
processors and their adaptations are the SmolVLA runner's (lerobot06_smolvla_ref.py), both imported from
beside this file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lerobot06_pi0_rtc_ref import collect, run_case  # noqa: E402
from lerobot06_smolvla_ref import make_policy, raw_batch  # noqa: E402


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    inp = dict(np.load(inputs_path))
    policy, pre, post, config = make_policy(Path(model_dir), half=False)

    def batch(inputs: dict, preprocess, item: int) -> dict:
        return preprocess(raw_batch(config, inputs, [item]))

    cases = [run_case(policy, pre, post, inp, c, batch=batch) for c in range(len(inp["case_item"]))]
    np.savez(out_path, **collect(cases, int(inp["case_noise_b"].shape[1])))


if __name__ == "__main__":
    main(*sys.argv[1:4])
