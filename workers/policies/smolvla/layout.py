"""SmolVLA's checkpoint layout, as LeRobot 0.6.1 saves it (`lerobot/smolvla_base` and its fine-tunes).

- `config.json`: LeRobot's SmolVLAConfig, `"type": "smolvla"`: chunk_size, max_state_dim/max_action_dim,
  num_steps, resize_imgs_with_padding (width, height), tokenizer_max_length, num_vlm_layers,
  num_expert_layers, self_attn_every_n_layers, expert_width_multiplier, attention_mode, min/max_period,
  input_features (cameras `observation.images.<name>`, in order) and output_features, and `vlm_model_name`,
  the hub id of the VLM whose architecture it uses (`HuggingFaceTB/SmolVLM2-500M-Video-Instruct`).
- `model.safetensors`: the policy's tensors under `model.` (VLAFlowMatching): `vlm_with_expert.vlm.*`
  (SmolVLMForConditionalGeneration, only the first num_vlm_layers text layers), `vlm_with_expert.lm_expert.*`
  (a Llama model without embeddings; its cross-attention layers' k/v projections read the VLM's keys and
  values), `state_proj`, `action_in_proj`, `action_out_proj`, `action_time_mlp_in`, `action_time_mlp_out`.
- Statistics as pi0's LeRobot layout: the processor pipelines' normalizer/unnormalizer safetensors (MEAN_STD for
  state and action, eps 1e-8 forward, `y * std + mean` back).
- The VLM's config and tokenizer are not in the checkpoint: LeRobot fetches them by `vlm_model_name`. Here they
  are read from the checkpoint's `vlm/` folder (the hub repo of `vlm_model_name` without its weights:
  config.json, tokenizer files, processor configs); the golden runner hands LeRobot the same folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import SmolVLMConfig

from workers.policies.checkpoint import checkpoint_shapes, read_json
from workers.policies.errors import CheckpointError
from workers.policies.pi0_layouts import lerobot_stats

VLM_DIR = "vlm"
LM_HEAD = "vlm_with_expert.vlm.lm_head.weight"
# Config values the serving path does not implement; a checkpoint that sets them is refused, not misread.
_UNSUPPORTED = {"add_image_special_tokens": False, "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False,
                "empty_cameras": 0, "prefix_length": -1}


@dataclass(frozen=True)
class Arch:
    """What the modules and the flow need from LeRobot's config."""

    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_steps: int = 10
    image_size: int = 512
    tokenizer_max_length: int = 48
    num_vlm_layers: int = 16
    num_expert_layers: int = -1
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    cross_attention: bool = True
    min_period: float = 4e-3
    max_period: float = 4.0


@dataclass
class Layout:
    arch: Arch
    vlm_config: SmolVLMConfig
    stats: dict[str, Any]  # {"state": {mean, std}, "actions": {mean, std}}
    eps: float
    cameras: list[str]
    vlm_dir: Path

    @staticmethod
    def rename(name: str) -> str:
        """LeRobot wraps VLAFlowMatching as the policy's `model`; our module is VLAFlowMatching's tree."""
        return name.removeprefix("model.")

    @staticmethod
    def ignorable(name: str) -> bool:
        """The VLM's language-model head is never run (SmolVLA reads hidden states, not logits); a checkpoint
        may hold it or, when it is tied to the embeddings, leave it out (safetensors keeps one of two shared
        tensors). The fingerprint still digests it like every tensor of the file."""
        return name == "model." + LM_HEAD


def wanted(name: str) -> bool:
    """The module tensors a checkpoint must provide (build_and_load's expected_filter)."""
    return name != LM_HEAD


def is_smolvla(config: dict[str, Any]) -> bool:
    return config.get("type") == "smolvla"


def detect(path: Path) -> Layout:
    cfg = read_json(path / "config.json")
    names = set(checkpoint_shapes(path))
    if not is_smolvla(cfg) or not any(n.startswith("model.vlm_with_expert.") for n in names):
        raise CheckpointError(
            f"{str(path)!r} is not a LeRobot SmolVLA checkpoint: config.json has type={cfg.get('type')!r}, tensors "
            f"start {sorted(names)[:4]}; expected 'type': 'smolvla' and model.vlm_with_expert.* tensors")
    bad = {k: cfg[k] for k, ok in _UNSUPPORTED.items() if k in cfg and cfg[k] != ok}
    if bad:
        raise CheckpointError(f"SmolVLA checkpoint {str(path)!r} sets {bad}, which this service does not implement "
                              f"(supported: {_UNSUPPORTED})")
    stats, eps = lerobot_stats(path, names)
    cams = [k.removeprefix("observation.images.") for k, v in cfg.get("input_features", {}).items()
            if isinstance(v, dict) and v.get("type") == "VISUAL"]
    if not cams:
        raise CheckpointError(f"SmolVLA config {str(path / 'config.json')!r} names no VISUAL input feature")
    arch, vlm = _arch(cfg, path), _vlm_config(path, cfg)
    _check_expert_layers(arch, vlm, path)
    return Layout(arch, vlm, stats, eps, cams, path / VLM_DIR)


def _check_expert_layers(arch: Arch, vlm: SmolVLMConfig, path: Path) -> None:
    """One expert layer per kept VLM layer (the shipped arrangement) is served. Fewer expert layers pair with
    every k-th VLM layer, which LeRobot's own code only runs when no skipped layer is a self-attention layer
    and no expert layer's projection shape disagrees with its role; that is refused rather than half-served."""
    layers = vlm.text_config.num_hidden_layers
    kept = min(arch.num_vlm_layers, layers) if arch.num_vlm_layers > 0 else layers
    if arch.num_expert_layers > 0 and arch.num_expert_layers != kept:
        raise CheckpointError(f"SmolVLA checkpoint {str(path)!r}: num_expert_layers={arch.num_expert_layers} with "
                              f"{kept} VLM layers is not served (only one expert layer per VLM layer, -1)")


def _arch(cfg: dict[str, Any], path: Path) -> Arch:
    width, height = cfg.get("resize_imgs_with_padding") or (512, 512)
    if int(width) != int(height):
        raise CheckpointError(f"{str(path)!r}: resize_imgs_with_padding {[width, height]} is not square; the VLM's "
                              "vision tower takes square images")
    mode = cfg.get("attention_mode", "cross_attn")
    if mode not in ("cross_attn", "self_attn"):
        raise CheckpointError(f"{str(path)!r}: unknown attention_mode {mode!r}; known: cross_attn, self_attn")
    default = Arch()
    try:
        return Arch(
            chunk_size=int(cfg.get("chunk_size", default.chunk_size)),
            max_state_dim=int(cfg.get("max_state_dim", default.max_state_dim)),
            max_action_dim=int(cfg.get("max_action_dim", default.max_action_dim)),
            num_steps=int(cfg.get("num_steps", default.num_steps)), image_size=int(width),
            tokenizer_max_length=int(cfg.get("tokenizer_max_length", default.tokenizer_max_length)),
            num_vlm_layers=int(cfg.get("num_vlm_layers", default.num_vlm_layers)),
            num_expert_layers=int(cfg.get("num_expert_layers", default.num_expert_layers)),
            self_attn_every_n_layers=int(cfg.get("self_attn_every_n_layers", default.self_attn_every_n_layers)),
            expert_width_multiplier=float(cfg.get("expert_width_multiplier", default.expert_width_multiplier)),
            cross_attention="cross" in mode, min_period=float(cfg.get("min_period", default.min_period)),
            max_period=float(cfg.get("max_period", default.max_period)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path / 'config.json')!r}: a SmolVLA size field is not a number: {exc}") from exc


def _vlm_config(path: Path, cfg: dict[str, Any]) -> SmolVLMConfig:
    folder = path / VLM_DIR
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"SmolVLA checkpoint {str(path)!r} has no {VLM_DIR}/config.json: copy the config.json, tokenizer and "
            f"processor files (not the weights) of {cfg.get('vlm_model_name')!r} from the hub into {str(folder)!r}")
    raw = read_json(folder / "config.json")
    if raw.get("model_type") != "smolvlm":
        raise CheckpointError(f"{str(folder / 'config.json')!r} has model_type {raw.get('model_type')!r}, not "
                              "'smolvlm' (SmolVLA's backbone is a SmolVLM2)")
    try:
        return SmolVLMConfig.from_dict(raw)
    except Exception as exc:  # config validation raises several types
        raise CheckpointError(f"{str(folder / 'config.json')!r} is not a valid SmolVLMConfig: {exc}") from exc
