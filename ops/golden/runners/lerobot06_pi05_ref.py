"""Runs INSIDE the lerobot06 reference env (Python 3.12, lerobot 0.6.1 with its own torch/transformers):
LeRobot's pi0.5 (`PI05Policy`, the openpi port behind `lerobot/pi05_base`), its processor pipelines (quantile
normalisation from the statistics it is given, the state discretised into the prompt, the tokenizer) and its
fp32 islands; nothing of the project.
Usage: python lerobot06_pi05_ref.py MODEL_DIR INPUTS.npz OUT.npz

Adaptations, all because the checkpoint is tiny and offline (each is recorded in the fixture's meta):
  1. get_gemma_config returns the tiny VLM/expert sizes for gemma_2b/gemma_300m, and the PaliGemma and
     expert classes get the tiny vision tower, projector width and vocabulary (0.6.1 hard-codes them);
  2. the tokenizer step uses the tiny checkpoint's tokenizer, with BOS prepended as PaliGemma's does;
  3. the weights are the checkpoint's own (LeRobot's names), through PI05Policy's own key fixing, strict.
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi05 import configuration_pi05, modeling_pi05, processor_pi05
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot06_pi0_ref as pi0_ref  # noqa: E402  the pi0 runner beside this file

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
STAT_KEYS = ("q01", "q99", "mean", "std", "min", "max")


def patch_tiny_sizes(sizes: dict) -> None:
    """Adaptation 1: the pi0 runner's, on LeRobot's pi0.5 modules."""
    pi0_ref.patch_tiny_sizes(sizes, modeling_pi05)


def tiny_tokenizer(model_dir: Path):
    """Adaptation 2: the pi0 runner's, on LeRobot's pi0.5 processor."""
    return pi0_ref.tiny_tokenizer(model_dir, processor_pi05)


def dataset_stats(model_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The statistics the checkpoint's own processor files hold (what make_pre_post_processors is given)."""
    pre = json.loads((model_dir / "policy_preprocessor.json").read_text())
    step = next(s for s in pre["steps"] if s["registry_name"] == "normalizer_processor")
    flat = load_file(str(model_dir / step["state_file"]))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        feature, _, stat = key.rpartition(".")
        if stat in STAT_KEYS:
            out.setdefault(feature, {})[stat] = value
    return out


def make_policy(model_dir: Path, cfg: dict, stats: dict, dtype: str):
    feats = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS}
    feats["observation.state"] = PolicyFeature(FeatureType.STATE, tuple(stats["observation.state"]["q01"].shape))
    config = configuration_pi05.PI05Config(
        input_features=feats,
        output_features={"action": PolicyFeature(FeatureType.ACTION, tuple(stats["action"]["q01"].shape))},
        chunk_size=cfg["chunk_size"], n_action_steps=cfg["chunk_size"], num_inference_steps=cfg["num_inference_steps"],
        tokenizer_max_length=cfg["tokenizer_max_length"], dtype=dtype, device="cpu")
    policy = modeling_pi05.PI05Policy(config)
    wanted = policy.state_dict()
    state = policy._fix_pytorch_state_dict_keys(load_file(str(model_dir / "model.safetensors")), config)  # noqa: SLF001
    unused = sorted(k for k in state if k not in wanted)  # saved, not part of the module (recorded)
    missing, unexpected = policy.load_state_dict({k: v.to(wanted[k].dtype) for k, v in state.items()
                                                  if k in wanted}, strict=True)
    assert not missing and not unexpected
    pre, post = processor_pi05.make_pi05_pre_post_processors(config, dataset_stats=stats)
    return policy.eval(), pre, post, unused


def run(policy, pre, post, inp, rows: list[int]) -> dict:
    """One batch over `rows` (sharing cameras and image size)."""
    present = [c for c in CAMERAS if inp[f"present_{c}"][rows[0]]]
    batch = {f"observation.images.{c}": torch.from_numpy(np.stack([inp[f"image_{r}_{c}"] for r in rows]))
             .permute(0, 3, 1, 2).float() / 255.0 for c in present}
    batch["observation.state"] = torch.from_numpy(inp["state"][rows]).float()
    batch["task"] = [str(inp["instructions"][r]) for r in rows]
    processed = pre(batch)
    noise = torch.from_numpy(inp["noise"][rows]).clone()
    chunk = policy.predict_action_chunk(processed, noise=noise)
    tokens, mask = processed["observation.language.tokens"], processed["observation.language.attention_mask"]
    towers, _ = policy._preprocess_images(processed)  # noqa: SLF001 - the resized tower inputs, for the record
    return {"chunk": chunk.float().numpy(), "actions": post(chunk).float().numpy(), "tower": towers[0].float().numpy(),
            "ids": [t[m.bool()].tolist() for t, m in zip(tokens, mask, strict=True)]}


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    cfg = json.loads((model_dir_p / "config.json").read_text())
    patch_tiny_sizes(cfg["vlaapi_pi0_sizes"])
    tok = tiny_tokenizer(model_dir_p)
    stats = dataset_stats(model_dir_p)
    inp = dict(np.load(inputs_path))
    out: dict[str, np.ndarray] = {}
    n_items = len(inp["instructions"])
    for tag, dtype in (("", "float32"), ("shipped_", "bfloat16")):
        policy, pre, post, unused = make_policy(model_dir_p, cfg, stats, dtype)
        singles = [run(policy, pre, post, inp, [r]) for r in range(n_items)]
        out[f"{tag}chunk"] = np.concatenate([s["chunk"] for s in singles])
        out[f"{tag}actions"] = np.concatenate([s["actions"] for s in singles])
        batch = run(policy, pre, post, inp, [int(r) for r in inp["batch_rows"]])
        out[f"{tag}batch_chunk"], out[f"{tag}batch_actions"] = batch["chunk"], batch["actions"]
        out[f"{tag}param_dtypes"] = np.array(json.dumps({k: str(v.dtype).replace("torch.", "")
                                                         for k, v in policy.state_dict().items()}, sort_keys=True))
        if not tag:
            out["tower_inputs"] = np.stack([singles[int(r)]["tower"][0] for r in inp["tower_rows"]])
            out["prompt_ids"] = np.array(json.dumps([s["ids"][0] for s in singles]))
            out["prompts"] = np.array(json.dumps([tok.decode(s["ids"][0][1:]) for s in singles]))
            out["unused_param_dtypes"] = np.array(json.dumps(unused))
    out["versions"] = np.array(json.dumps({p: importlib.metadata.version(p) for p in
                                           ("lerobot", "transformers", "torch", "tokenizers")}))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
