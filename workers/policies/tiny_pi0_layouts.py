"""pi0-tiny written in the other layouts users have (same weights as pi0-tiny, their names and files):
LeRobot (lerobot/pi0_base naming, processor statistics), LeRobot v0 (the first lerobot/pi0 naming, statistics
as model buffers) and openpi's PyTorch conversion (assets/<asset_id>/norm_stats.json)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from workers.policies.checkpoint import iter_tensors, read_json, save_sharded, write_json
from workers.policies.pi0_layouts import LEROBOT_EPS, lerobot_v0_name, native_to_openpi
from workers.policies.tiny import build_pi0_tiny, pi0_tiny_config

_OWN_FILES = ("config.json", "model.safetensors", "norm_stats.json")
_VARIANTS = {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}


def _native(tmp: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    build_pi0_tiny(tmp)
    tensors = dict(iter_tensors(tmp))
    return tensors, pi0_tiny_config(), read_json(tmp / "norm_stats.json")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.name not in _OWN_FILES:
            shutil.copy(f, dst / f.name)


def explicit_sizes(cfg: dict[str, Any]) -> dict[str, Any]:
    vlm = cfg["vlm_config"]
    keep = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads",
            "head_dim")
    return {"vlm_config": {"text_config": dict(vlm["text_config"]), "vision_config": dict(vlm["vision_config"]),
                           "projection_dim": vlm["projection_dim"], "image_token_id": vlm["image_token_id"]},
            "dit_config": {k: cfg["dit_config"][k] for k in keep}}


def _lerobot_config(cfg: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    cams = stats.get("cameras", [])
    feats: dict[str, Any] = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, 224, 224]} for c in cams}
    feats["observation.state"] = {"type": "STATE", "shape": [len(stats["norm_stats"]["state"]["mean"])]}
    return {"type": "pi0", **_VARIANTS, "n_obs_steps": 1, "chunk_size": cfg["chunk_size"],
            "n_action_steps": cfg["chunk_size"], "max_state_dim": cfg["max_state_dim"],
            "max_action_dim": cfg["max_action_dim"], "num_inference_steps": cfg["num_inference_steps"],
            "image_resolution": [224, 224], "tokenizer_max_length": 48, "input_features": feats,
            "output_features": {"action": {"type": "ACTION", "shape": [len(stats["norm_stats"]["actions"]["mean"])]}},
            "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
            "dtype": "float32", "vlaapi_pi0_sizes": explicit_sizes(cfg)}


def _stats_tensors(stats: dict[str, Any], keys: dict[str, str]) -> dict[str, torch.Tensor]:
    ns = stats["norm_stats"]
    return {f"{feat}.{stat}": torch.tensor(ns[src][stat], dtype=torch.float32)
            for feat, src in keys.items() for stat in ("mean", "std")}


def _write_processors(out: Path, stats: dict[str, Any], *, newline_step: str = "pi0_new_line_processor",
                      padding: str = "max_length") -> None:
    """pi0's pipelines by default; SmolVLA's differ in the newline step's name and the tokenizer's padding."""
    both = {"observation.state": "state", "action": "actions"}
    write_processors(out, _stats_tensors(stats, both), _stats_tensors(stats, {"action": "actions"}),
                     {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}, newline_step, 48,
                     padding=padding)


def write_processors(out: Path, pre_stats: dict[str, torch.Tensor], post_stats: dict[str, torch.Tensor],
                     norm_map: dict[str, str], prompt_step: str, max_length: int, *, padding: str = "max_length",
                     ) -> None:
    """LeRobot's two pipelines: JSON step lists, the stateful steps' tensors in their own safetensors."""
    pre = "policy_preprocessor_step_5_normalizer_processor.safetensors"
    post = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    norm_cfg = {"eps": LEROBOT_EPS, "norm_map": norm_map}
    write_json(out / "policy_preprocessor.json", {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": prompt_step, "config": {}},
        {"registry_name": "tokenizer_processor", "config": {"max_length": max_length, "padding": padding}},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
        {"registry_name": "normalizer_processor", "config": norm_cfg, "state_file": pre}]})
    write_json(out / "policy_postprocessor.json", {"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor", "config": norm_cfg, "state_file": post},
        {"registry_name": "device_processor", "config": {"device": "cpu"}}]})
    save_file(pre_stats, str(out / pre))
    save_file(post_stats, str(out / post))


def build_pi0_tiny_lerobot(out_dir: Path, *, v0: bool = False) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tensors, cfg, stats = _native(Path(tmp))
        names = {k: "model." + native_to_openpi(k) for k in tensors}
        if v0:
            names = {k: "model." + lerobot_v0_name(v.removeprefix("model.")) for k, v in names.items()}
        state = {names[k]: v for k, v in tensors.items()}
        if v0:  # v0 kept its statistics as buffers of Normalize/Unnormalize modules inside the policy
            ns = stats["norm_stats"]
            for prefix, feat, src in (("normalize_inputs", "observation_state", "state"),
                                      ("normalize_targets", "action", "actions"),
                                      ("unnormalize_outputs", "action", "actions")):
                for stat in ("mean", "std"):
                    state[f"{prefix}.buffer_{feat}.{stat}"] = torch.tensor(ns[src][stat], dtype=torch.float32)
        save_sharded(state, out_dir)
        config = _lerobot_config(cfg, stats)
        if v0:  # LeRobot 0.3's field for the image size (and its top-left padding: pi0_layouts)
            config["resize_imgs_with_padding"] = config.pop("image_resolution")
        write_json(out_dir / "config.json", config)
        if not v0:
            _write_processors(out_dir, stats)
        _copy_tokenizer(Path(tmp), out_dir)
    return out_dir


def build_pi0_tiny_openpi(out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tensors, cfg, stats = _native(Path(tmp))
        save_sharded({native_to_openpi(k): v for k, v in tensors.items()}, out_dir)
        write_json(out_dir / "config.json", {"action_dim": cfg["max_action_dim"], "action_horizon": cfg["chunk_size"],
                                             **_VARIANTS, "precision": "float32",
                                             "vlaapi_pi0_sizes": explicit_sizes(cfg)})
        (out_dir / "assets" / "tiny_robot").mkdir(parents=True)
        write_json(out_dir / "assets" / "tiny_robot" / "norm_stats.json", {"norm_stats": stats["norm_stats"]})
        _copy_tokenizer(Path(tmp), out_dir)
    return out_dir


BUILDERS = {"pi0-tiny-lerobot": build_pi0_tiny_lerobot,
            "pi0-tiny-lerobot-v0": lambda out: build_pi0_tiny_lerobot(out, v0=True),
            "pi0-tiny-openpi": build_pi0_tiny_openpi}
