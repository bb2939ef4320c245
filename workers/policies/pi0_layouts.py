"""The pi0 checkpoint layouts users have, recognised from their files, read into one native model.

- native: transformers PI0Config (model_type "pi0"); tensors model.vlm.*, model.dit.*, embed_action_time.*;
  statistics in norm_stats.json (openpi's format).
- lerobot: LeRobot's PI0Config ("type": "pi0", Gemma variants instead of sizes); tensors
  model.paligemma_with_expert.*, model.action_in_proj.* ...; statistics in the policy processors'
  safetensors (policy_preprocessor.json names them), or v0 normalize_* buffers inside the model file.
- openpi: openpi's PyTorch conversion (config.json {action_dim, action_horizon, paligemma_variant, ...});
  tensors paligemma_with_expert.*, action_in_proj.* ...; statistics in assets/<asset_id>/norm_stats.json.

LeRobot's current naming (lerobot/pi0_base, openpi's port) is openpi's PI0Pytorch under "model."; its v0 naming
(the first lerobot/pi0 upload, transformers 4.48) nests the language model as paligemma.language_model.model.*.
Sizes: LeRobot and openpi name Gemma variants instead of sizes; the table below is theirs. A tiny test
checkpoint carries explicit sizes in "vlaapi_pi0_sizes" (not an upstream field), as the OpenVLA tiny does.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from workers.policies.checkpoint import checkpoint_shapes, read_json
from workers.policies.errors import CheckpointError

# openpi gemma.get_config (and LeRobot's copy of it): width, depth, mlp_dim, heads, kv heads, head_dim.
GEMMA_VARIANTS = {
    "gemma_2b": {"hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
                 "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
    "gemma_300m": {"hidden_size": 1024, "num_hidden_layers": 18, "intermediate_size": 4096,
                   "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
}
PALIGEMMA_VOCAB = 257152
# SigLIP So400m/14 at 224 as openpi and LeRobot build it (projection to the 2B width).
SIGLIP_SO400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "num_hidden_layers": 27,
                 "num_attention_heads": 16, "intermediate_size": 4304, "patch_size": 14, "image_size": 224,
                 "vision_use_head": False}
OPENPI_EPS = 1e-6  # openpi normalize.py: (x - mean) / (std + 1e-6), and x * (std + 1e-6) + mean
LEROBOT_EPS = 1e-8  # NormalizerProcessorStep's default; its inverse uses std without eps

_OPENPI_MAP = (  # openpi PI0Pytorch name prefix -> transformers-native prefix
    ("paligemma_with_expert.paligemma.model.", "model.vlm."),
    ("paligemma_with_expert.paligemma.lm_head.", "model.vlm.language_model.embed_tokens."),
    ("paligemma_with_expert.gemma_expert.model.", "model.dit."),
    ("paligemma_with_expert.gemma_expert.lm_head.", "model.dit.embed_tokens."),
    ("state_proj.", "embed_action_time.state_proj."),
    ("action_in_proj.", "embed_action_time.action_in_proj."),
    ("action_time_mlp_in.", "embed_action_time.action_time_mlp_in."),
    ("action_time_mlp_out.", "embed_action_time.action_time_mlp_out."),
    ("action_out_proj.", "action_out_proj."),
)
_V0_MAP = (  # LeRobot v0 (transformers 4.48 PaliGemma nesting) -> openpi naming
    ("paligemma_with_expert.paligemma.language_model.model.", "paligemma_with_expert.paligemma.model.language_model."),
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "paligemma_with_expert.paligemma.lm_head."),
    ("paligemma_with_expert.paligemma.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."),
    ("paligemma_with_expert.paligemma.multi_modal_projector.",
     "paligemma_with_expert.paligemma.model.multi_modal_projector."),
)
_TOWER = "model.vlm.vision_tower."
_V0_STATS = re.compile(r"^(normalize_inputs|normalize_targets|unnormalize_outputs)\.buffer_(\w+)\.(\w+)$")


def _swap(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in table:
        if name.startswith(old):
            return new + name[len(old):]
    return None


def openpi_to_native(name: str) -> str:
    """openpi / LeRobot tensor name -> native module name (unchanged if it matches no rule)."""
    if name.startswith("model."):
        name = name[len("model."):]  # LeRobot wraps PI0Pytorch as the policy's `model`
    name = _swap(name, _V0_MAP) or name
    name = _swap(name, _OPENPI_MAP) or name
    # transformers 5 flattens SiglipVisionModel (its CLIPVisionModel rule drops "vision_model").
    return name.replace(_TOWER + "vision_model.", _TOWER, 1) if name.startswith(_TOWER + "vision_model.") else name


def native_to_openpi(name: str) -> str:
    """The name openpi's conversion saves (tied embeddings as lm_head, as on the hub)."""
    if name.startswith(_TOWER):
        name = _TOWER + "vision_model." + name[len(_TOWER):]
    for old, new in sorted(_OPENPI_MAP, key=lambda p: -len(p[1])):
        if name.startswith(new):
            return old + name[len(new):]
    raise KeyError(name)


def lerobot_v0_name(openpi_name: str) -> str:
    for new, old in ((n, o) for o, n in _V0_MAP):
        if openpi_name.startswith(new):
            return old + openpi_name[len(new):]
    return openpi_name


@dataclass
class Layout:
    name: str  # "native" | "lerobot" | "openpi"
    config: dict[str, Any]  # PI0Config kwargs
    stats: dict[str, Any]  # {"state": {mean, std}, "actions": {mean, std}, ...meta}
    eps: float
    inverse_eps: bool  # whether un-normalising adds eps to std (openpi does, LeRobot does not)
    tied_duplicates: tuple[str, ...] = ()  # checkpoint names that duplicate a tied tensor already mapped
    # How camera images reach the tower's square (preprocess.IMAGE_CONVENTIONS), as the checkpoint's own code
    # does it: openpi's centred PIL resize_with_pad, LeRobot >= 0.4's centred torch port of it, or LeRobot
    # <= 0.3's top-left padding.
    image_convention: str = "openpi"

    def rename(self, name: str) -> str:
        return name if self.name == "native" else openpi_to_native(name)

    def ignorable(self, name: str) -> bool:
        return name in self.tied_duplicates or bool(_V0_STATS.match(name))


def detect(path: Path, *, asset_id: str | None = None) -> Layout:
    """Recognise the layout from config.json and the tensor names; unknown is a CheckpointError naming both."""
    cfg = read_json(path / "config.json")
    names = set(checkpoint_shapes(path))
    if cfg.get("model_type") == "pi0" and any(n.startswith("model.vlm.") for n in names):
        return Layout("native", cfg, read_json(path / "norm_stats.json"), OPENPI_EPS, True)
    if cfg.get("type") == "pi0" and any(n.startswith("model.paligemma_with_expert.") for n in names):
        return _lerobot(path, cfg, names)
    if "paligemma_variant" in cfg and any(n.startswith("paligemma_with_expert.") for n in names):
        return _openpi(path, cfg, names, asset_id)
    sample = sorted(names)[:4]
    raise CheckpointError(
        f"{str(path)!r} is not a pi0 layout we know: config.json has model_type={cfg.get('model_type')!r}, "
        f"type={cfg.get('type')!r}, keys {sorted(cfg)[:8]}; tensors start {sample}. Known: transformers-native "
        "(model_type 'pi0', model.vlm.*), LeRobot ('type': 'pi0', model.paligemma_with_expert.*), openpi's "
        "PyTorch conversion (paligemma_variant, paligemma_with_expert.*)")


def model_sizes(cfg: dict[str, Any], vlm: str, expert: str) -> dict[str, Any]:
    sizes = _variant_sizes(cfg, vlm, expert)
    # The expert's (unused) embedding is saved as gemma_expert.lm_head with the VLM's vocabulary. transformers
    # 5.24 ties dit vocab_size to the VLM's; 5.18 leaves a dict-given dit_config at Gemma's 256000.
    sizes["dit_config"].setdefault("vocab_size", sizes["vlm_config"]["text_config"]["vocab_size"])
    return sizes


def _variant_sizes(cfg: dict[str, Any], vlm: str, expert: str) -> dict[str, Any]:
    if "vlaapi_pi0_sizes" in cfg:  # tiny test checkpoints only
        return json.loads(json.dumps(cfg["vlaapi_pi0_sizes"]))
    if vlm not in GEMMA_VARIANTS or expert not in GEMMA_VARIANTS:
        raise CheckpointError(f"unknown Gemma variant(s) {vlm!r}/{expert!r}; known: {sorted(GEMMA_VARIANTS)}")
    text = {"model_type": "gemma", **GEMMA_VARIANTS[vlm], "vocab_size": PALIGEMMA_VOCAB}
    return {"vlm_config": {"text_config": text, "vision_config": dict(SIGLIP_SO400M),
                           "projection_dim": GEMMA_VARIANTS[vlm]["hidden_size"], "image_token_id": PALIGEMMA_VOCAB},
            "dit_config": dict(GEMMA_VARIANTS[expert])}


def tied_names(names: set[str], prefix: str) -> tuple[str, ...]:
    """PaliGemma ties lm_head to embed_tokens; a checkpoint may hold either name or both (same tensor)."""
    head = prefix + "paligemma_with_expert.paligemma.lm_head.weight"
    emb = prefix + "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    return (head,) if head in names and emb in names else ()


def _lerobot(path: Path, cfg: dict[str, Any], names: set[str]) -> Layout:
    # LeRobot <= 0.3 (config resize_imgs_with_padding, statistics as model buffers) padded top-left; from
    # 0.4 (image_resolution, processor pipelines: the openpi port) it pads centred as openpi does, but with
    # openpi's torch resize_with_pad_torch (float bilinear, no antialias), not the client's PIL one.
    legacy = "resize_imgs_with_padding" in cfg or not (path / "policy_preprocessor.json").is_file()
    res = cfg.get("image_resolution") or cfg.get("resize_imgs_with_padding") or [224, 224]
    sizes = model_sizes(cfg, cfg.get("paligemma_variant", "gemma_2b"), cfg.get("action_expert_variant", "gemma_300m"))
    sizes["vlm_config"]["vision_config"]["image_size"] = int(res[0])
    config = {**sizes, "chunk_size": int(cfg.get("chunk_size", 50)), "max_state_dim": int(cfg.get("max_state_dim", 32)),
              "max_action_dim": int(cfg.get("max_action_dim", 32)),
              "num_inference_steps": int(cfg.get("num_inference_steps", cfg.get("num_steps", 10))),
              "min_period": float(cfg.get("min_period", 4e-3)), "max_period": float(cfg.get("max_period", 4.0))}
    stats, eps = lerobot_stats(path, names)
    cams = [k.removeprefix("observation.images.") for k, v in cfg.get("input_features", {}).items()
            if isinstance(v, dict) and v.get("type") == "VISUAL"]
    meta = {"cameras": cams} if cams else {}
    return Layout("lerobot", config, {**stats, **meta}, eps, False, tied_names(names, "model."),
                  "lerobot-0.3" if legacy else "lerobot-torch")


def lerobot_stats(path: Path, names: set[str], keep: tuple[str, ...] = ("mean", "std"),
                  ) -> tuple[dict[str, Any], float]:
    """State stats from the preprocessor's normalizer step, action stats from the postprocessor's
    unnormalizer step (file names from the pipelines' JSON); v0 checkpoints keep them as model buffers.
    `keep`: the statistics read (pi0's mean/std, pi0.5's q01/q99)."""
    found: dict[str, dict[str, list[float]]] = {}
    eps = LEROBOT_EPS
    for pipeline, registry in (("policy_preprocessor", "normalizer_processor"),
                               ("policy_postprocessor", "unnormalizer_processor")):
        if not (path / f"{pipeline}.json").is_file():
            continue
        for step in read_json(path / f"{pipeline}.json").get("steps", []):
            if step.get("registry_name") == registry and step.get("state_file"):
                eps = float(step.get("config", {}).get("eps", eps))
                _read_stats(path / step["state_file"], found, keep)
    if not found:
        _read_v0_buffers(path, names, found)
    try:
        return {"state": found["observation.state"], "actions": found["action"]}, eps
    except KeyError as exc:
        raise CheckpointError(
            f"LeRobot checkpoint {str(path)!r} has no {exc.args[0]} mean/std: expected policy_preprocessor.json "
            "+ its normalizer_processor safetensors (or v0 normalize_* buffers in the model)") from exc


def _read_stats(file: Path, into: dict[str, dict[str, list[float]]], keep: tuple[str, ...]) -> None:
    if not file.is_file():
        raise CheckpointError(f"statistics file {str(file)!r} named by the processor JSON is missing")
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            feature, _, stat = key.rpartition(".")
            if stat in keep:
                into.setdefault(feature, {})[stat] = f.get_tensor(key).double().flatten().tolist()


def _read_v0_buffers(path: Path, names: set[str], into: dict[str, dict[str, list[float]]]) -> None:
    from workers.policies.checkpoint import iter_tensors

    wanted = {n for n in names if _V0_STATS.match(n)}
    for name, tensor in iter_tensors(path):
        if name in wanted:
            m = _V0_STATS.match(name)
            feature = m.group(2).replace("_", ".")
            into.setdefault(feature, {})[m.group(3)] = tensor.double().flatten().tolist()


def _openpi(path: Path, cfg: dict[str, Any], names: set[str], asset_id: str | None) -> Layout:
    sizes = model_sizes(cfg, cfg["paligemma_variant"], cfg.get("action_expert_variant", "gemma_300m"))
    dim = int(cfg.get("action_dim", 32))
    config = {**sizes, "chunk_size": int(cfg.get("action_horizon", 50)), "max_state_dim": dim, "max_action_dim": dim}
    stats = read_json(openpi_norm_stats(path, asset_id))
    return Layout("openpi", config, stats, OPENPI_EPS, True, tied_names(names, ""))


def openpi_norm_stats(path: Path, asset_id: str | None) -> Path:
    """An openpi export's `assets/<asset_id>/norm_stats.json`: the one there is, or the one `asset_id` names."""
    assets = sorted(p.parent for p in (path / "assets").glob("*/norm_stats.json"))
    if asset_id is not None:
        assets = [a for a in assets if a.name == asset_id]
    if len(assets) != 1:
        raise CheckpointError(f"openpi checkpoint {str(path)!r} needs exactly one assets/<asset_id>/norm_stats.json "
                              f"(or the asset_id option naming one); found {[a.name for a in assets]}"
                              + (f" for asset_id={asset_id!r}" if asset_id else ""))
    return assets[0] / "norm_stats.json"
