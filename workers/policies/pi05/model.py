"""pi0.5's network: PaliGemma (transformers' PaliGemmaModel, as pi0 uses it) plus an action expert whose every
RMS norm is adaptive, conditioned on the flow time (openpi `PI0Pytorch` with `pi05=True`; LeRobot 0.6.1
`PI05Pytorch` and its `pi_gemma.PiGemmaRMSNorm`).

Facts from the references (openpi gemma_pytorch.py / LeRobot 0.6.1 modeling_pi05.py, pi_gemma.py):
- the prefix is images + language only; the robot state is not a token of the suffix but text in the prompt
  (policy.py); the suffix is `action_in_proj(x_t)`, chunk_size tokens that attend to every valid prefix token
  and to each other (bidirectionally);
- the time t goes through the sine-cosine embedding (min_period 4e-3, max_period 4.0, float64 frequencies),
  then `silu(time_mlp_out(silu(time_mlp_in(.))))`: that vector is the condition of every expert norm;
- adaptive RMS norm: `dense(cond)` -> (scale, shift, gate); `x * rsqrt(mean(x^2) + eps)` in float32,
  `* (1 + scale) + shift`, back to the stream dtype; the gate multiplies the residual branch
  (`x + branch * gate`); the final norm's gate is unused;
- under bf16 the vision tower, projector, every norm (their `dense` too) and the four projections stay
  float32 (LeRobot keeps `action_in_proj`, `action_out_proj`, `time_mlp_*` outside the bf16 cast);
- the expert attends over the VLM's prefix keys/values of the same layer (same heads and head_dim), its own
  rotary positions continuing from the number of valid prefix tokens, scale head_dim**-0.5.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from transformers import AutoModel, PI0Config

from workers.policies import flow_sampling
from workers.policies.pi0_flow import embed_prefix, prefix_cache
from workers.policies.timing import Stopwatch

FP32_NAMES = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "norm.",
              "action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out")


class AdaRMSNorm(nn.Module):
    def __init__(self, dim: int, cond_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var = x.float().square().mean(-1, keepdim=True)
        scale, shift, gate = self.dense(cond.to(self.dense.weight.dtype))[:, None].chunk(3, dim=-1)
        normed = x * torch.rsqrt(var + self.eps) * (1 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class ExpertLayer(nn.Module):
    def __init__(self, cfg, cond_dim: int):
        super().__init__()
        width, d, heads, kv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        self.heads, self.kv_heads, self.head_dim = heads, kv, d
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(width, heads * d, bias=False)
        self.self_attn.k_proj = nn.Linear(width, kv * d, bias=False)
        self.self_attn.v_proj = nn.Linear(width, kv * d, bias=False)
        self.self_attn.o_proj = nn.Linear(heads * d, width, bias=False)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(width, cfg.intermediate_size, bias=False)
        self.mlp.up_proj = nn.Linear(width, cfg.intermediate_size, bias=False)
        self.mlp.down_proj = nn.Linear(cfg.intermediate_size, width, bias=False)
        self.input_layernorm = AdaRMSNorm(width, cond_dim, cfg.rms_norm_eps)
        self.post_attention_layernorm = AdaRMSNorm(width, cond_dim, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, s, _ = x.shape
        attn = self.self_attn
        h, gate = self.input_layernorm(x, cond)
        q = attn.q_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, *rope), rotate(k, *rope)
        k, v = torch.cat([past[0].to(k.dtype), k], dim=2), torch.cat([past[1].to(v.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5,
                                             enable_gqa=self.heads != self.kv_heads)  # kv heads shared, uncopied
        x = x + attn.o_proj(out.transpose(1, 2).reshape(b, s, -1)) * gate
        h, gate = self.post_attention_layernorm(x, cond)
        mlp = self.mlp
        return x + mlp.down_proj(F.gelu(mlp.gate_proj(h), approximate="tanh") * mlp.up_proj(h)) * gate


class Expert(nn.Module):
    """The action expert: Gemma blocks with adaptive norms over the VLM's prefix cache."""

    def __init__(self, cfg):
        super().__init__()
        width = cfg.hidden_size
        self.head_dim = cfg.head_dim
        self.rope_theta = float(_rope_theta(cfg))
        self.layers = nn.ModuleList(ExpertLayer(cfg, width) for _ in range(cfg.num_hidden_layers))
        self.norm = AdaRMSNorm(width, width, cfg.rms_norm_eps)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin as transformers' Gemma rotary embedding computes them (float32, then the stream dtype)."""
        inv = 1.0 / (self.rope_theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                                      device=positions.device).float() / self.head_dim))
        freqs = positions.float()[..., None] * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    def forward(self, x: torch.Tensor, cond: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]],
                prefix_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        x = x.to(self.layers[0].self_attn.q_proj.weight.dtype)
        positions = prefix_mask.sum(-1, keepdim=True) + torch.arange(s, device=x.device)[None]
        rope = self.rope(positions, x.dtype)
        keep = torch.cat([prefix_mask.bool(), torch.ones(b, s, dtype=torch.bool, device=x.device)], dim=1)
        mask = keep[:, None, None, :]
        for layer, kv in zip(self.layers, past, strict=True):
            x = layer(x, cond, kv, mask, rope)
        return self.norm(x, cond)[0]


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    return params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi's sine-cosine embedding of the flow time (frequencies in float64, result in t's dtype)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(t.dtype)


class Pi05Model(nn.Module):
    """Module names follow pi0's native ones (`model.vlm.*`, `model.dit.*`) so pi0_layouts' name map serves;
    the four projections keep openpi's names."""

    def __init__(self, config: PI0Config):
        super().__init__()
        self.config = config
        width = config.dit_config.hidden_size
        self.model = nn.Module()
        self.model.vlm = AutoModel.from_config(config.vlm_config)
        self.model.dit = Expert(config.dit_config)
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)

    def condition(self, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        emb = time_embedding(t, self.time_mlp_in.in_features, cfg.min_period, cfg.max_period)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb.to(self.time_mlp_in.weight.dtype)))))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]],
                 prefix_mask: torch.Tensor) -> torch.Tensor:
        suffix = self.action_in_proj(x.to(self.action_in_proj.weight.dtype))
        hidden = self.model.dit(suffix, self.condition(t), past, prefix_mask)
        return self.action_out_proj(hidden[:, -self.config.chunk_size:].to(self.action_out_proj.weight.dtype)).float()


def prefix_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each VLM layer's keys and values (rotated keys, as the cache holds them)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def sample_actions(model: Pi05Model, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor,
                   noise: torch.Tensor, num_steps: int, timings: dict[str, float] | None = None,
                   recompute_prefix: bool = False, guidance: flow_sampling.Guidance | None = None) -> torch.Tensor:
    """One prefix pass (pi0's: only the present cameras embedded), then Euler from t=1 (noise) to t=0 in
    float32 (flow_sampling.euler, with real-time chunking when `guidance` is given); the expert only reads the
    prefix cache, so steps never see each other. `recompute_prefix` rebuilds the prefix at every step: slower,
    the self-check's reference."""
    with flow_sampling.sampling_mode(guidance):
        watch = Stopwatch(input_ids.device)
        embeds = embed_prefix(model, input_ids, images)
        watch.lap(timings, "vision")
        past = prefix_kv(prefix_cache(model, embeds, attention_mask))
        watch.lap(timings, "prefill")
        calls = 0

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal calls, past
            if calls and recompute_prefix:
                past = prefix_kv(prefix_cache(model, embeds, attention_mask))
            calls += 1
            return model.velocity(x, t, past, attention_mask)

        x = flow_sampling.euler(velocity, noise, num_steps, guidance)
        watch.lap(timings, "flow")
        return x
