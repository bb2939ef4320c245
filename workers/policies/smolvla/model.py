"""SmolVLA's modules under LeRobot's names (VLAFlowMatching's tree), and one decoder layer's pieces.

Facts from LeRobot 0.6.1 (`policies/smolvla/smolvlm_with_expert.py`, `modeling_smolvla.py`):
- the VLM is transformers' SmolVLMForConditionalGeneration with its text model cut to the first
  `num_vlm_layers` layers (the rest are never built or saved);
- the expert is a Llama model built from a copy of the VLM's text config at `expert_width_multiplier` of its
  width (same heads and head_dim), MLP width `get_intermediate_size` (2/3 x 4, rounded up to 256), as many
  layers as the VLM (or `num_expert_layers`, then it pairs with every k-th VLM layer), no embeddings; in
  cross-attention mode every layer that is not a self-attention layer (`i % self_attn_every_n_layers != 0`)
  has k/v projections from the VLM's key/value width (heads_kv x head_dim) instead of its own width;
- RoPE is LeRobot's own (wavelength 10 000, halves rotated, computed in float32), not the text config's
  rope_theta; attention is eager: scores and softmax in float32, masked with float32's minimum, the
  probabilities cast to the values' dtype;
- a layer's residual adds are in place on the o_proj / MLP output (so they keep that output's dtype).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import LlamaModel, SmolVLMConfig, SmolVLMForConditionalGeneration

from workers.policies.smolvla.layout import Arch

ROPE_WAVELENGTH = 10_000.0
# In half precision LeRobot keeps these in float32: everything but the VLM (it loads only the VLM in bf16,
# `AutoModelForImageTextToText.from_pretrained(torch_dtype="bfloat16")`, and builds the rest in float32).
HALF_PREFIX = "vlm_with_expert.vlm."


def intermediate_size(width: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    hidden = int(multiplier * int(2 * width / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class VLMWithExpert(nn.Module):
    def __init__(self, vlm_config: SmolVLMConfig, arch: Arch):
        super().__init__()
        cfg = copy.deepcopy(vlm_config)
        text = cfg.text_config
        if arch.num_vlm_layers > 0:
            text.num_hidden_layers = min(arch.num_vlm_layers, text.num_hidden_layers)
        cfg._attn_implementation = "sdpa"  # the vision tower's; the text layers run our own attention below
        self.vlm = SmolVLMForConditionalGeneration(cfg)
        self.num_vlm_layers = text.num_hidden_layers
        expert = copy.deepcopy(text)
        expert.hidden_size = int(text.hidden_size * arch.expert_width_multiplier)
        expert.intermediate_size = intermediate_size(expert.hidden_size)
        expert.num_hidden_layers = arch.num_expert_layers if arch.num_expert_layers > 0 else self.num_vlm_layers
        if self.num_vlm_layers % expert.num_hidden_layers:
            raise ValueError(f"{self.num_vlm_layers} VLM layers are not a multiple of {expert.num_hidden_layers} "
                             "expert layers")
        self.lm_expert = LlamaModel(expert)
        kv_width = text.num_key_value_heads * text.head_dim
        for i, layer in enumerate(self.lm_expert.layers):
            if not is_self_attention(arch, i):
                out = expert.num_key_value_heads * expert.head_dim
                layer.self_attn.k_proj = nn.Linear(kv_width, out, bias=expert.attention_bias)
                layer.self_attn.v_proj = nn.Linear(kv_width, out, bias=expert.attention_bias)
        self.lm_expert.embed_tokens = None
        self.expert_hidden_size = expert.hidden_size
        self.heads, self.kv_heads, self.head_dim = text.num_attention_heads, text.num_key_value_heads, text.head_dim

    @property
    def text_model(self) -> LlamaModel:
        return self.vlm.model.text_model

    def layer_pairs(self) -> list[tuple[nn.Module, nn.Module | None]]:
        """(VLM layer, expert layer or None) per VLM layer: with fewer expert layers, every k-th VLM layer
        has one (LeRobot's get_model_layers)."""
        every = self.num_vlm_layers // len(self.lm_expert.layers)
        return [(vlm_layer, self.lm_expert.layers[i // every] if i % every == 0 else None)
                for i, vlm_layer in enumerate(self.text_model.layers)]


class SmolVLAModel(nn.Module):
    """LeRobot's VLAFlowMatching: the VLM with its expert, and the state/action/time projections."""

    def __init__(self, vlm_config: SmolVLMConfig, arch: Arch):
        super().__init__()
        self.arch = arch
        self.vlm_with_expert = VLMWithExpert(vlm_config, arch)
        width, expert = vlm_config.text_config.hidden_size, self.vlm_with_expert.expert_hidden_size
        self.state_proj = nn.Linear(arch.max_state_dim, width)
        self.action_in_proj = nn.Linear(arch.max_action_dim, expert)
        self.action_out_proj = nn.Linear(expert, arch.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert, expert)
        self.action_time_mlp_out = nn.Linear(expert, expert)

    def is_self_attention_layer(self, index: int) -> bool:
        return is_self_attention(self.arch, index)


def is_self_attention(arch: Arch, index: int) -> bool:
    """Layer `index` attends over [prefix; its own tokens] rather than cross-attending to the prefix only
    (by VLM layer index in the steps; by expert layer index for the expert's projection shapes, as LeRobot)."""
    every = arch.self_attn_every_n_layers
    return not arch.cross_attention or (every > 0 and index % every == 0)


def keep_fp32_outside_vlm(model: SmolVLAModel) -> None:
    """Called on the freshly built model before the checkpoint is copied in (build_and_load's before_load):
    the expert and the projections become float32, so they receive the checkpoint's float32 values."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith(HALF_PREFIX):
                param.data = param.data.float()


def rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (B, L, H, D) rotated by positions (B, L), in float32, returned in x's dtype."""
    dtype, half = x.dtype, x.shape[-1] // 2
    x = x.float()
    timescale = ROPE_WAVELENGTH ** ((2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device))
    angle = (positions[..., None].float() / timescale[None, None, :])[..., None, :]
    sin, cos = torch.sin(angle), torch.cos(angle)
    lo, hi = x[..., :half], x[..., half:]
    return torch.cat([lo * cos - hi * sin, hi * cos + lo * sin], dim=-1).to(dtype)


def project(layer: nn.Module, hidden: torch.Tensor, parts: str = "qkv") -> list[torch.Tensor]:
    """The layer's normed input projected to the named parts, each (B, L, heads, head_dim)."""
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    return [getattr(attn, f"{p}_proj")(normed).view(shape) for p in parts]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Eager grouped-query attention over (B, L, H, D) tensors; mask (B, Lq, Lk) bool. Returns (B, Lq, H*D)."""
    batch, length, kv_heads, dim = k.shape
    groups = heads // kv_heads
    k = k[:, :, :, None, :].expand(batch, length, kv_heads, groups, dim).reshape(batch, length, heads, dim)
    v = v[:, :, :, None, :].expand(batch, length, kv_heads, groups, dim).reshape(batch, length, heads, dim)
    scores = torch.matmul(q.float().transpose(1, 2), k.float().transpose(1, 2).transpose(2, 3))
    scores *= dim**-0.5
    scores = torch.where(mask[:, None], scores, torch.finfo(torch.float32).min)
    probs = nn.functional.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    return out.reshape(batch, -1, heads * dim)


def finish(layer: nn.Module, attended: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """o_proj, residual, MLP, residual: the rest of a decoder layer after attention."""
    out = layer.self_attn.o_proj(attended.to(layer.self_attn.o_proj.weight.dtype))
    out += hidden
    residual = out.clone()
    out = layer.mlp(layer.post_attention_layernorm(out))
    out += residual
    return out
