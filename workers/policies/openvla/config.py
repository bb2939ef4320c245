"""OpenVLA config read from config.json exactly as written.

Upstream's PrismaticConfig derives timm ids, image sizes and the LLM id from fixed backbone tables and
rejects anything else; we read every field as written and derive nothing, which is what lets a tiny
test checkpoint describe tiny towers with the real timm ids plus size overrides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from workers.policies.checkpoint import read_json
from workers.policies.errors import CheckpointError

_REQUIRED = (
    "timm_model_ids", "image_sizes", "use_fused_vision_backbone", "image_resize_strategy",
    "pad_to_multiple_of", "n_action_bins", "norm_stats", "text_config",
)


@dataclass
class OpenVLAConfig:
    timm_model_ids: list[str]
    image_sizes: list[int]
    use_fused_vision_backbone: bool
    image_resize_strategy: str
    pad_to_multiple_of: int
    n_action_bins: int
    norm_stats: dict[str, Any]
    text_config: dict[str, Any]
    timm_override_act_layers: list[str | None] = field(default_factory=lambda: [None, None])
    # Not an upstream field: size overrides for tiny towers (timm accepts them on the real ids).
    timm_model_kwargs: list[dict[str, Any]] = field(default_factory=lambda: [{}, {}])
    arch_specifier: str = "no-align+fused-gelu-mlp"
    pad_token_id: int = 32000
    llm_max_length: int = 2048
    vision_backbone_id: str = ""
    llm_backbone_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenVLAConfig:
        absent = [k for k in _REQUIRED if k not in data]
        if absent:
            raise CheckpointError(f"OpenVLA config.json lacks field(s) {absent}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "raw"}
        cfg = cls(**known, raw=dict(data))
        cfg._validate()
        return cfg

    @classmethod
    def from_dir(cls, path: Path) -> OpenVLAConfig:
        return cls.from_dict(read_json(path / "config.json"))

    def _validate(self) -> None:
        if not self.use_fused_vision_backbone or len(self.timm_model_ids) != 2:
            raise CheckpointError("only the fused (two-tower) OpenVLA vision backbone is supported")
        if self.image_resize_strategy != "resize-naive":
            raise CheckpointError(f"unsupported image_resize_strategy {self.image_resize_strategy!r}")
        if not self.arch_specifier.endswith("fused-gelu-mlp"):
            raise CheckpointError(f"unsupported projector arch_specifier {self.arch_specifier!r}")
        if not self.norm_stats:
            raise CheckpointError("norm_stats is empty: no way to un-normalise actions")

    @property
    def base_vocab_size(self) -> int:
        """V: the action ids are the top n_action_bins ids below V (the padding rows sit above it)."""
        return int(self.text_config["vocab_size"]) - int(self.pad_to_multiple_of)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.raw)
        data.update({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "raw"})
        return data


def llama_config(text_config: dict[str, Any]) -> LlamaConfig:
    """transformers 5 wants rope settings in rope_parameters; a 4.40-era dict has rope_theta/rope_scaling."""
    cfg = {k: v for k, v in text_config.items() if not k.startswith("_") and k not in ("transformers_version",)}
    theta = cfg.pop("rope_theta", None)
    scaling = cfg.pop("rope_scaling", None)
    if "rope_parameters" not in cfg:
        params: dict[str, Any] = dict(scaling or {"rope_type": "default"})
        params.setdefault("rope_type", params.pop("type", "default"))
        params["rope_theta"] = float(theta if theta is not None else 10000.0)
        cfg["rope_parameters"] = params
    # Upstream serves with flash-attn 2; SDPA is its portable equivalent and handles our left padding.
    cfg["attn_implementation"] = "sdpa"
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    return LlamaConfig(**cfg)
