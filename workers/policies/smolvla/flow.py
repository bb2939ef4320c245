"""SmolVLA inference: the prefix (images, language, state) through the VLM once, keeping each layer's keys and
values, then Euler steps of the expert over that cache, from t=1 (noise) to t=0.

Facts from LeRobot 0.6.1 (`VLAFlowMatching.embed_prefix/embed_suffix/sample_actions/denoise_step`):
- prefix: per camera the connector's tokens x sqrt(width), then the prompt's embeddings x sqrt(width), then
  one state token (state_proj of the normalised, zero-padded state); images and text attend to each other
  bidirectionally and not to the state; the state attends to all. Positions count valid tokens only.
- suffix: action_in_proj(x) next to a sine-cosine embedding of t (float64, periods min..max), through
  action_time_mlp_in -> SiLU -> action_time_mlp_out; the action tokens attend causally to each other.
- every layer fills the cache in the prefill (plain self-attention over the prefix). In the steps, a
  self-attention layer attends over [prefix keys; its own keys] (positions after the prefix), a
  cross-attention layer over the expert's k/v projections of the VLM's cached (rotated) keys and values only
  (queries at positions 0..chunk-1); then the expert's norm and action_out_proj in float32.

Rows of a batch may have different cameras and prompt lengths: each row's prefix is its own tokens,
right-padded; a padded position is masked out everywhere and shifts no position.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from workers.policies import flow_sampling
from workers.policies.smolvla.model import SmolVLAModel, attend, finish, project, rope
from workers.policies.timing import Stopwatch

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per VLM layer: rotated keys, values (B, P, kv_heads, D)


def block_mask(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """big_vision's 2-D mask: a token sees the valid tokens whose block number is at most its own."""
    cum = torch.cumsum(blocks, dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def embed_prefix(model: SmolVLAModel, images: torch.Tensor, cameras_per_row: Sequence[int],
                 token_rows: Sequence[Sequence[int]], state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (B, P, W), valid (B, P)). `images` holds every row's present cameras, row-major."""
    vlm = model.vlm_with_expert.vlm.model
    device = state.device
    tokens = []
    if images.shape[0]:
        feats = vlm.connector(vlm.vision_model(pixel_values=images.to(vlm.vision_model.dtype)).last_hidden_state)
        feats = feats * torch.tensor(feats.shape[-1] ** 0.5, dtype=feats.dtype, device=feats.device)
        tokens = list(feats.split(list(cameras_per_row)))
    state_emb = model.state_proj(state.to(model.state_proj.weight.dtype))
    rows = []
    embed = vlm.text_model.get_input_embeddings()
    for n, ids in enumerate(token_rows):
        text = embed(torch.tensor(ids, dtype=torch.long, device=device))
        text = text * math.sqrt(text.shape[-1])
        seen = [tokens[n].flatten(0, 1)] if cameras_per_row[n] else []
        rows.append(torch.cat([*seen, text, state_emb[n][None]], dim=0))
    length = max(r.shape[0] for r in rows)
    embs = torch.zeros(len(rows), length, rows[0].shape[-1], dtype=rows[0].dtype, device=device)
    valid = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
    for n, r in enumerate(rows):
        embs[n, : r.shape[0]] = r
        valid[n, : r.shape[0]] = True
    return embs, valid


def prefix_blocks(valid: torch.Tensor) -> torch.Tensor:
    """Block numbers for block_mask: each row's state token (its last valid one) is block 1, the rest block 0."""
    last = valid.sum(dim=1) - 1
    return (torch.arange(valid.shape[1], device=valid.device)[None, :] >= last[:, None]).long()


def prefill(model: SmolVLAModel, embs: torch.Tensor, valid: torch.Tensor) -> Cache:
    """Every VLM layer's rotated keys and values of the prefix (the last layer's output is never needed)."""
    mask = block_mask(valid, prefix_blocks(valid))
    positions = torch.cumsum(valid.long(), dim=1) - 1
    mwe = model.vlm_with_expert
    cache: Cache = []
    hidden = embs
    for i, (layer, _) in enumerate(mwe.layer_pairs()):
        q, k, v = project(layer, hidden)
        q, k = rope(q, positions), rope(k, positions)
        cache.append((k, v))
        if i + 1 < mwe.num_vlm_layers:
            hidden = finish(layer, attend(q, k, v, mask, mwe.heads), hidden)
    return cache


def time_embedding(t: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def embed_suffix(model: SmolVLAModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    actions = model.action_in_proj(x.to(model.action_in_proj.weight.dtype))
    arch = model.arch
    times = time_embedding(t, actions.shape[-1], arch.min_period, arch.max_period).to(actions.dtype)
    fused = torch.cat([actions, times[:, None, :].expand_as(actions)], dim=2)
    return model.action_time_mlp_out(F.silu(model.action_time_mlp_in(fused)))


def velocity(model: SmolVLAModel, cache: Cache, valid: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v(x, t) in float32 from the expert over the cached prefix (the cache is read, never changed)."""
    mwe = model.vlm_with_expert
    hidden = embed_suffix(model, x, t)
    batch, chunk = hidden.shape[:2]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()[None].expand(batch, -1, -1)
    sees_prefix = valid[:, None, :].expand(batch, chunk, valid.shape[1])
    after_prefix = valid.sum(dim=1, keepdim=True) + torch.arange(chunk, device=x.device)[None, :]
    from_zero = torch.arange(chunk, device=x.device)[None, :].expand(batch, -1)
    for i, (_, layer) in enumerate(mwe.layer_pairs()):
        if layer is None:
            continue
        keys, values = cache[i]
        if model.is_self_attention_layer(i):
            q, k, v = project(layer, hidden)
            q, k = rope(q, after_prefix), rope(k, after_prefix)
            mask = torch.cat([sees_prefix, causal], dim=2)
            att = attend(q, torch.cat([keys, k], dim=1), torch.cat([values, v], dim=1), mask, mwe.heads)
        else:
            (q,) = project(layer, hidden, "q")
            attn = layer.self_attn
            k = attn.k_proj(keys.to(attn.k_proj.weight.dtype).reshape(*keys.shape[:2], -1))
            v = attn.v_proj(values.to(attn.v_proj.weight.dtype).reshape(*values.shape[:2], -1))
            shape = (*keys.shape[:2], -1, attn.head_dim)
            att = attend(rope(q, from_zero), k.view(shape), v.view(shape), sees_prefix, mwe.heads)
        hidden = finish(layer, att, hidden)
    out = mwe.lm_expert.norm(hidden)[:, -model.arch.chunk_size:]
    return model.action_out_proj(out.float())


def sample_actions(model: SmolVLAModel, *, images: torch.Tensor, cameras_per_row: Sequence[int],
                   token_rows: Sequence[Sequence[int]], state: torch.Tensor, noise: torch.Tensor,
                   timings: dict[str, float] | None = None, recompute_prefix: bool = False,
                   guidance: flow_sampling.Guidance | None = None) -> torch.Tensor:
    """The normalised chunk (B, chunk, max_action_dim): flow_sampling's Euler loop (shared by the flow
    policies) over this velocity field, guided towards the executing chunk where a row asks for real-time
    chunking. `recompute_prefix` rebuilds the prefix cache for every step after the first (slower; the
    self-check's reference for the cached path)."""
    with flow_sampling.sampling_mode(guidance):
        watch = Stopwatch(state.device)
        embs, valid = embed_prefix(model, images, cameras_per_row, token_rows, state)
        watch.lap(timings, "vision")
        cache = prefill(model, embs, valid)
        watch.lap(timings, "prefill")
        steps_done = [0]  # the euler loop calls the field once per step

        def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            recompute = recompute_prefix and steps_done[0] > 0
            steps_done[0] += 1
            return velocity(model, prefill(model, embs, valid) if recompute else cache, valid, x, t)

        x = flow_sampling.euler(field, noise, model.arch.num_steps, guidance)
        watch.lap(timings, "flow")
        return x
