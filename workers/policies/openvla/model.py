"""The OpenVLA network: two timm ViT towers, a fused GELU projector and a Llama-2 LM.

Module names equal the checkpoint's tensor names (vision_backbone.featurizer.*, projector.fc1.*,
language_model.model.*, ...) apart from DINOv2's LayerScale, which the converter saved as
ls{1,2}.scale_factor and timm calls ls{1,2}.gamma.
"""
from __future__ import annotations

import re

import timm
import torch
from torch import nn
from transformers import LlamaForCausalLM

from workers.policies.openvla.config import OpenVLAConfig, llama_config

TOWER_NAMES = ("featurizer", "fused_featurizer")


def build_tower(cfg: OpenVLAConfig, i: int, *, full: bool = False) -> nn.Module:
    """One timm ViT by its real id. `full` keeps what inference never runs (last block, final norm,
    attention-pool head): only the tiny-checkpoint writer wants those, to save the real key set."""
    kwargs = dict(pretrained=False, num_classes=0, img_size=cfg.image_sizes[i], **cfg.timm_model_kwargs[i])
    if cfg.timm_override_act_layers[i] is not None:
        kwargs["act_layer"] = cfg.timm_override_act_layers[i]
    tower = timm.create_model(cfg.timm_model_ids[i], **kwargs)
    tower.full_depth = len(tower.blocks)
    if not full:
        # Features come from block depth-2, so the last block, the final norm and the pooling head are
        # dead weight: dropping them saves ~30 M params on the 7B towers and a block of compute.
        tower.blocks = tower.blocks[: tower.full_depth - 1]
        tower.norm = nn.Identity()
        if getattr(tower, "attn_pool", None) is not None:
            tower.attn_pool = None
    return tower


def tower_features(tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Output of block depth-2, no final norm, prefix (cls/register) tokens dropped: (B, 256, D)."""
    x = tower.patch_embed(pixels)
    x = tower._pos_embed(x)  # timm's own cls/reg/pos-embed ordering, so it matches the trained weights
    x = tower.norm_pre(x)
    x = tower.blocks(x)
    return x[:, tower.num_prefix_tokens :]


class VisionBackbone(nn.Module):
    def __init__(self, cfg: OpenVLAConfig, *, full: bool = False):
        super().__init__()
        self.featurizer = build_tower(cfg, 0, full=full)
        self.fused_featurizer = build_tower(cfg, 1, full=full)

    @property
    def embed_dim(self) -> int:
        return self.featurizer.embed_dim + self.fused_featurizer.embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W): channels 0-2 normalised for DINOv2, 3-5 for SigLIP -> (B, 256, D_dino + D_siglip)."""
        dino = tower_features(self.featurizer, pixel_values[:, :3])
        siglip = tower_features(self.fused_featurizer, pixel_values[:, 3:])
        return torch.cat([dino, siglip], dim=2)


class FusedGeluProjector(nn.Module):
    """fc1 (D -> 4D), GELU, fc2 (4D -> llm), GELU, fc3 (llm -> llm); exact (erf) GELU as trained."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class OpenVLAModel(nn.Module):
    def __init__(self, cfg: OpenVLAConfig, *, full: bool = False):
        super().__init__()
        self.config = cfg
        self.vision_backbone = VisionBackbone(cfg, full=full)
        llm_cfg = llama_config(cfg.text_config)
        self.language_model = LlamaForCausalLM(llm_cfg)
        self.projector = FusedGeluProjector(self.vision_backbone.embed_dim, llm_cfg.hidden_size)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values))


_LAYERSCALE = re.compile(r"\.ls([12])\.scale_factor$")


def checkpoint_to_module_name(name: str) -> str:
    return _LAYERSCALE.sub(r".ls\1.gamma", name)


def module_to_checkpoint_name(name: str) -> str:
    return re.sub(r"\.ls([12])\.gamma$", r".ls\1.scale_factor", name)


def unused_checkpoint_key(cfg_depths: dict[str, int]):
    """Names saved by upstream that inference never reads: final norms, SigLIP's attn_pool head and the
    last block of each tower. `cfg_depths` maps tower name -> full depth."""
    last = {t: f"vision_backbone.{t}.blocks.{d - 1}." for t, d in cfg_depths.items()}

    def ignorable(name: str) -> bool:
        for tower in TOWER_NAMES:
            prefix = f"vision_backbone.{tower}."
            if name.startswith(prefix + "norm.") or name.startswith(prefix + "attn_pool."):
                return True
            if tower in last and name.startswith(last[tower]):
                return True
        return False

    return ignorable
