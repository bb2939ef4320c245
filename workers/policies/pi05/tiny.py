"""pi05-tiny: the pi0.5 architecture at toy size (random weights, fixed seed), written as LeRobot 0.6.1 writes a
pi05 policy (config.json `type: pi05`, `model.*` tensors, processor statistics); pi05-tiny-openpi: the same
weights in openpi's PyTorch conversion layout (assets/<asset_id>/norm_stats.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers.policies.checkpoint import save_sharded, write_json
from workers.policies.pi05.layouts import to_openpi
from workers.policies.tiny import PI0_BASE_VOCAB, SEED, pi0_tiny_config, save_pi0_tokenizer, spread_init
from workers.policies.tiny_pi0_layouts import explicit_sizes, write_processors

VARIANTS = {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}
EXPERT = {"hidden_size": 48, "num_hidden_layers": 2, "intermediate_size": 96, "num_attention_heads": 2,
          "num_key_value_heads": 1, "head_dim": 32}  # narrower than the VLM (64), as 300M is beside 2B
CAMERAS = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
STATS = {  # quantiles of the same order as a 7-DoF arm's (positions, gripper) and its end-effector deltas
    "state": {"q01": [-0.8, -0.5, -0.2, -1.2, -0.9, -0.6, -0.3, 0.0], "q99": [0.9, 0.6, 0.8, 1.0, 1.1, 0.7, 0.5, 1.0]},
    "actions": {"q01": [-0.02, -0.025, -0.018, -0.06, -0.05, -0.08, 0.0],
                "q99": [0.021, 0.022, 0.02, 0.06, 0.055, 0.07, 1.0]},
}
UNITS = ["m", "m", "m", "rad", "rad", "rad", "gripper_open_fraction"]


def pi05_tiny_config() -> dict[str, Any]:
    cfg = pi0_tiny_config()
    return {**cfg, "dit_config": {**EXPERT, "vocab_size": PI0_BASE_VOCAB}}


def tiny_weights() -> dict[str, torch.Tensor]:
    """Pi05Model's tensors under openpi's names, plus the expert's unused lm_head both references save."""
    from transformers import PI0Config

    from workers.policies.pi05.model import Pi05Model

    torch.manual_seed(SEED)
    model = Pi05Model(PI0Config(**pi05_tiny_config()))
    spread_init(model, SEED)
    state = {to_openpi(k): v for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(SEED + 1)
    state["paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.randn(PI0_BASE_VOCAB, EXPERT["hidden_size"],
                                                                             generator=gen)
    return state


def _sizes() -> dict[str, Any]:
    sizes = explicit_sizes(pi0_tiny_config())
    return {**sizes, "dit_config": dict(EXPERT)}


def _feature_stats(entry: dict[str, list[float]], prefix: str) -> dict[str, torch.Tensor]:
    q01, q99 = torch.tensor(entry["q01"]), torch.tensor(entry["q99"])
    return {f"{prefix}.q01": q01, f"{prefix}.q99": q99, f"{prefix}.min": q01 * 1.2, f"{prefix}.max": q99 * 1.2,
            f"{prefix}.mean": (q01 + q99) / 2, f"{prefix}.std": (q99 - q01) / 4}


def build_pi05_tiny(out_dir: Path) -> Path:
    save_sharded({"model." + k: v for k, v in tiny_weights().items()}, out_dir)
    feats: dict[str, Any] = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, 224, 224]} for c in CAMERAS}
    feats["observation.state"] = {"type": "STATE", "shape": [len(STATS["state"]["q01"])]}
    norm_map = {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}
    write_json(out_dir / "config.json", {
        "type": "pi05", **VARIANTS, "dtype": "float32", "n_obs_steps": 1, "chunk_size": 50, "n_action_steps": 50,
        "max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 10, "image_resolution": [224, 224],
        "tokenizer_max_length": 200, "input_features": feats,
        "output_features": {"action": {"type": "ACTION", "shape": [len(STATS["actions"]["q01"])]}},
        "normalization_mapping": norm_map, "vlaapi_pi0_sizes": _sizes()})
    pre = {**_feature_stats(STATS["state"], "observation.state"), **_feature_stats(STATS["actions"], "action")}
    write_processors(out_dir, pre, _feature_stats(STATS["actions"], "action"), norm_map,
                     "pi05_prepare_state_tokenizer_processor_step", 200)
    save_pi0_tokenizer(out_dir)
    return out_dir


def build_pi05_tiny_openpi(out_dir: Path) -> Path:
    save_sharded(tiny_weights(), out_dir)
    write_json(out_dir / "config.json", {"action_dim": 32, "action_horizon": 50, **VARIANTS, "precision": "float32",
                                         "vlaapi_pi0_sizes": _sizes()})
    assets = out_dir / "assets" / "tiny_robot"
    assets.mkdir(parents=True)
    write_json(assets / "norm_stats.json", {"norm_stats": STATS, "cameras": CAMERAS, "action_type": "ee_delta",
                                            "units": UNITS})
    save_pi0_tokenizer(out_dir)
    return out_dir


BUILDERS = {"pi05-tiny": build_pi05_tiny, "pi05-tiny-openpi": build_pi05_tiny_openpi}
