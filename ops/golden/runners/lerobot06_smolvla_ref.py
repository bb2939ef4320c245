"""Runs INSIDE the lerobot06 reference env (Python 3.12, lerobot 0.6.1 with its own torch/transformers):
LeRobot's SmolVLA on the smolvla-tiny checkpoint as written (its config.json read by LeRobot's own config
parser, its model.safetensors loaded strictly by `SmolVLAPolicy.from_pretrained`), LeRobot's processor
pipeline, fixed noise; nothing of the project.
Usage: python lerobot06_smolvla_ref.py MODEL_DIR INPUTS.npz OUT.npz

Adaptations, all because the hub is unreachable (each is recorded in the output):
  1. `vlm_model_name` (the hub id of SmolVLM2, whose config and processor SmolVLA fetches) is the checkpoint's
     `vlm/` folder: the tiny SmolVLM config, tokenizer and processor files;
  2. the statistics are given to `make_smolvla_pre_post_processors` as read from the checkpoint's
     normalizer/unnormalizer safetensors (LeRobot's own files; the pipelines are LeRobot's);
  3. shipped_*: the VLM in bfloat16, the expert and projections in float32, as LeRobot builds a pretrained
     SmolVLA (load_vlm_weights: `AutoModelForImageTextToText.from_pretrained(torch_dtype="bfloat16")`).
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.smolvla import modeling_smolvla, processor_smolvla
from safetensors.torch import load_file


def stats(model_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Adaptation 2: feature -> {stat: tensor} from the files the processor JSONs name."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for pipeline in ("policy_preprocessor", "policy_postprocessor"):
        for step in json.loads((model_dir / f"{pipeline}.json").read_text())["steps"]:
            if step.get("state_file"):
                for key, value in load_file(str(model_dir / step["state_file"])).items():
                    feature, _, stat = key.rpartition(".")
                    out.setdefault(feature, {})[stat] = value
    return out


def make_policy(model_dir: Path, half: bool):
    config = PreTrainedConfig.from_pretrained(str(model_dir))
    config.vlm_model_name = str(model_dir / "vlm")  # adaptation 1
    config.device = "cpu"
    if not half:
        policy = modeling_smolvla.SmolVLAPolicy.from_pretrained(str(model_dir), config=config, strict=True)
    else:  # adaptation 3
        policy = modeling_smolvla.SmolVLAPolicy(config)
        policy.model.vlm_with_expert.vlm.to(torch.bfloat16)
        missing, unexpected = policy.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
        assert not missing and not unexpected
    pre, post = processor_smolvla.make_smolvla_pre_post_processors(config, dataset_stats=stats(model_dir))
    return policy.eval(), pre, post, config


def raw_batch(config, inp, rows: list[int]) -> dict:
    """LeRobot's observation dict for `rows` (same cameras, same image size), before its preprocessor."""
    cams = [k.removeprefix("observation.images.") for k in config.image_features]
    batch = {}
    for c in cams:
        if inp[f"present_{c}"][rows[0]]:
            imgs = np.stack([inp[f"image_{r}_{c}"] for r in rows])
            batch[f"observation.images.{c}"] = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    batch["observation.state"] = torch.from_numpy(inp["state"][rows]).float()
    batch["task"] = [str(inp["instructions"][r]) for r in rows]
    return batch


def run(policy, pre, post, config, inp, rows: list[int]):
    """One batch over `rows`: (normalised chunk, actions, prompt ids)."""
    noise = torch.from_numpy(inp["noise"][rows]).clone()
    processed = pre(raw_batch(config, inp, rows))
    chunk = policy.predict_action_chunk(processed, noise=noise)
    actions = post(chunk)
    ids, mask = processed["observation.language.tokens"], processed["observation.language.attention_mask"]
    pairs = zip(ids.tolist(), mask.tolist(), strict=True)
    prompt = [[int(t) for t, m in zip(i, k, strict=True) if m] for i, k in pairs]
    return chunk.float().numpy(), actions.float().numpy(), prompt


def param_dtypes(policy) -> dict[str, str]:
    return {k: str(v.dtype).replace("torch.", "") for k, v in policy.model.state_dict().items()}


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    inp = dict(np.load(inputs_path))
    out: dict[str, np.ndarray] = {}
    for tag, half in (("", False), ("shipped_", True)):
        policy, pre, post, config = make_policy(model_dir_p, half)
        singles = [run(policy, pre, post, config, inp, [r]) for r in range(len(inp["instructions"]))]
        for n, (c, a, _) in enumerate(singles):
            out[f"{tag}chunk_{n}"], out[f"{tag}actions_{n}"] = c[0], a[0]
        rows = [int(r) for r in inp["batch_rows"]]
        out[f"{tag}batch_chunk"], out[f"{tag}batch_actions"], _ = run(policy, pre, post, config, inp, rows)
        out[f"{tag}param_dtypes"] = np.array(json.dumps(param_dtypes(policy), sort_keys=True))
        out["prompt_ids"] = np.array(json.dumps([p[0] for _, _, p in singles]))
    out["versions"] = np.array(json.dumps({p: importlib.metadata.version(p) for p in
                                           ("lerobot", "transformers", "torch", "tokenizers")}))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
