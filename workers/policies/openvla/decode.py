"""Batched prefill + KV-cache greedy decode for OpenVLA (no generate(): see the reference, §12).

Rows are LEFT padded so every row's last real position is the last column: one prefill, then
`n_steps - 1` single-token steps for the whole batch, with position ids counted over real tokens only,
so each row sees exactly what it would see alone.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from workers.policies.hf_compat import cache_kwarg
from workers.policies.openvla.model import OpenVLAModel
from workers.policies.timing import Stopwatch


def splice_inputs(
    model: OpenVLAModel, patches: torch.Tensor, rows: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[emb(BOS), 256 patches, emb(rest of the row's ids)] per row, left padded.

    Returns inputs_embeds (B, T, H), attention_mask (B, T) and position_ids (B, T).
    """
    embed = model.language_model.get_input_embeddings()
    n_patch = patches.shape[1]
    total = n_patch + max(len(r) for r in rows)
    seqs, masks = [], []
    for i, ids in enumerate(rows):
        text = embed(torch.tensor(ids, device=patches.device))
        seq = torch.cat([text[:1], patches[i].to(text.dtype), text[1:]], dim=0)
        pad = total - seq.shape[0]
        seqs.append(torch.cat([seq.new_zeros(pad, seq.shape[1]), seq], dim=0))
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(seq.shape[0], dtype=torch.long)]))
    mask = torch.stack(masks).to(patches.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.stack(seqs), mask, positions


def _next_token(model: OpenVLAModel, hidden: torch.Tensor, allowed: tuple[int, int] | None) -> torch.Tensor:
    """Greedy pick from the last position's logits, optionally restricted to ids [lo, hi)."""
    lm_head = model.language_model.lm_head
    if allowed is None:
        return lm_head(hidden).float().argmax(-1)
    lo, hi = allowed
    # Only the action rows of lm_head are needed: 256 x H instead of the full vocab x H.
    logits = torch.nn.functional.linear(hidden, lm_head.weight[lo:hi])
    return logits.float().argmax(-1) + lo


@torch.inference_mode()
def greedy_decode(
    model: OpenVLAModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    n_steps: int,
    allowed: tuple[int, int] | None,
    timings: dict[str, float] | None = None,
) -> torch.Tensor:
    """Exactly n_steps new tokens per row: one prefill, then n_steps-1 cached single-token steps."""
    llm = model.language_model.model
    embed = model.language_model.get_input_embeddings()
    watch = Stopwatch(inputs_embeds.device)
    cache = DynamicCache(config=llm.config)
    out = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
              use_cache=True, **cache_kwarg(llm, cache))
    tokens = [_next_token(model, out.last_hidden_state[:, -1], allowed)]
    watch.lap(timings, "prefill")
    pos = position_ids[:, -1:]
    for _ in range(n_steps - 1):
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        pos = pos + 1
        out = llm(inputs_embeds=embed(tokens[-1][:, None]), attention_mask=attention_mask, position_ids=pos,
                  use_cache=True, **cache_kwarg(llm, cache))
        tokens.append(_next_token(model, out.last_hidden_state[:, -1], allowed))
    watch.lap(timings, "decode")
    return torch.stack(tokens, dim=1)
