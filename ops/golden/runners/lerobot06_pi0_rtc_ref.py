"""Runs INSIDE the lerobot06 reference env: LeRobot 0.6.1's real-time chunking (lerobot/policies/rtc, its
RTCProcessor driven by PI0Policy.predict_action_chunk's RTC keyword arguments) on the tiny pi0 weights.
Usage: python lerobot06_pi0_rtc_ref.py MODEL_DIR INPUTS.npz OUT.npz

Per case: chunk A (no guidance, noise A) as LeRobot's action queue would hold it, normalised ("original") and
post-processed (robot units); its leftover after `executed` steps is the prefix; then chunk B (noise B)
three ways: unguided, guided by LeRobot 0.6.1 as shipped, and guided with the velocity evaluated on an x_t
that already requires grad. The last is adaptation 4 below: 0.6.1 evaluates v before x_t requires grad, so
its autograd.grad sees x1 = x_t - t * const and J = I; with the denoiser wrapped, the same RTCProcessor code
differentiates through the velocity field (the paper's J^T e).

Adaptations 1-3 are the pi0 runner's (lerobot06_pi0_ref.py, imported from beside this file); 4: above.
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import RTCAttentionSchedule
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.policies.rtc.modeling_rtc import RTCProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lerobot06_pi0_ref import CAMERAS, make_policy, patch_tiny_sizes, tiny_tokenizer  # noqa: E402


class DifferentiatingProcessor(RTCProcessor):
    """Adaptation 4: the denoiser it is given marks its input as requiring grad before the forward pass."""

    def denoise_step(self, x_t, prev_chunk_left_over, inference_delay, time, original_denoise_step_partial,
                     execution_horizon=None):
        def tracked(x):
            x.requires_grad_(True)
            return original_denoise_step_partial(x)

        return super().denoise_step(x_t, prev_chunk_left_over, inference_delay, time, tracked, execution_horizon)


def batch_of(inp: dict, pre, item: int) -> dict:
    present = [c for c in CAMERAS if inp[f"present_{c}"][item]]
    batch = {f"observation.images.{c}": torch.from_numpy(inp[f"image_{c}"][item][None]).permute(0, 3, 1, 2).float()
             / 255.0 for c in present}
    batch["observation.state"] = torch.from_numpy(inp["state"][[item]]).float()
    batch["task"] = [str(inp["instructions"][item])]
    return pre(batch)


def set_rtc(policy, case: dict, processor: type[RTCProcessor] | None) -> None:
    if processor is None:
        policy.config.rtc_config = None
        policy.init_rtc_processor()
        return
    cfg = RTCConfig(enabled=True, execution_horizon=case["horizon"], max_guidance_weight=case["weight"],
                    prefix_attention_schedule=RTCAttentionSchedule[case["schedule"].upper()])
    policy.config.rtc_config = cfg
    policy.init_rtc_processor()
    policy.model.rtc_processor = processor(cfg)


def run_case(policy, pre, post, inp: dict, c: int, batch=batch_of) -> dict[str, np.ndarray]:
    """`batch(inp, pre, item)`: the preprocessed observation of an item (the SmolVLA runner passes its own)."""
    item, executed = int(inp["case_item"][c]), int(inp["case_executed"][c])
    case = {"horizon": int(inp["case_horizon"][c]), "weight": float(inp["case_weight"][c]),
            "schedule": str(inp["case_schedule"][c])}
    obs = batch(inp, pre, item)
    set_rtc(policy, case, None)
    chunk_a = policy.predict_action_chunk(obs, noise=torch.from_numpy(inp["case_noise_a"][[c]]).clone())
    leftover = chunk_a[:, executed:].clone()
    out = {"prev_chunk": leftover[0].numpy(), "prev_actions": post(leftover.clone())[0].float().numpy()}
    noise_b = torch.from_numpy(inp["case_noise_b"][[c]])
    chunk = policy.predict_action_chunk(obs, noise=noise_b.clone())
    out["plain_chunk"], out["plain_actions"] = chunk[0].numpy(), post(chunk)[0].float().numpy()
    kwargs = {"inference_delay": int(inp["case_delay"][c]), "prev_chunk_left_over": leftover,
              "execution_horizon": case["horizon"]}
    for tag, processor in (("rtc", RTCProcessor), ("vjp", DifferentiatingProcessor)):
        set_rtc(policy, case, processor)
        chunk = policy.predict_action_chunk(obs, noise=noise_b.clone(), **kwargs)
        out[f"{tag}_chunk"], out[f"{tag}_actions"] = chunk[0].detach().numpy(), post(chunk.detach())[0].float().numpy()
    set_rtc(policy, case, None)
    return out


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    patch_tiny_sizes(json.loads((model_dir_p / "config.json").read_text()))
    tiny_tokenizer(model_dir_p)
    meta = json.loads((model_dir_p / "norm_stats.json").read_text())
    inp = dict(np.load(inputs_path))
    policy, pre, post = make_policy(model_dir_p, meta, "float32")
    np.savez(out_path, **collect([run_case(policy, pre, post, inp, c) for c in range(len(inp["case_item"]))],
                                 int(inp["case_noise_b"].shape[1])))


def collect(cases: list[dict[str, np.ndarray]], chunk: int) -> dict[str, np.ndarray]:
    """The cases' records stacked (ragged prefixes zero-padded, lengths in case_prev_len), with versions."""
    out: dict[str, np.ndarray] = {}
    for key in cases[0]:
        if key.startswith("prev_"):  # ragged: zero-padded to the chunk length, lengths in case_prev_len
            padded = np.zeros((len(cases), chunk, cases[0][key].shape[1]), dtype=np.float32)
            for c, case in enumerate(cases):
                padded[c, : len(case[key])] = case[key]
            out[key] = padded
        else:
            out[key] = np.stack([case[key] for case in cases])
    out["case_prev_len"] = np.array([len(case["prev_chunk"]) for case in cases], dtype=np.int64)
    out["versions"] = np.array(json.dumps({p: importlib.metadata.version(p) for p in
                                           ("lerobot", "transformers", "torch", "tokenizers")}))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:4])
