"""pi0 pieces around transformers' PI0ForConditionalGeneration: checkpoint key names, per-row noise and
a timed copy of `sample_actions` (same maths: one prefix pass, then Euler steps on the expert with the
prefix cache cropped back after each step)."""
from __future__ import annotations

import torch
from transformers import PI0ForConditionalGeneration

from workers.policies.timing import Stopwatch

# LeRobot / openpi-PyTorch names -> transformers' native names (the reference's table, §4); the same
# renames transformers registers in conversion_mapping.py, applied here because we load safetensors
# ourselves to get the strict check.
_PREFIX_MAP = (
    ("paligemma_with_expert.paligemma.model.", "model.vlm."),
    ("paligemma_with_expert.paligemma.lm_head.", "model.vlm.language_model.embed_tokens."),
    ("paligemma_with_expert.gemma_expert.model.", "model.dit."),
    ("paligemma_with_expert.gemma_expert.lm_head.", "model.dit.embed_tokens."),
    ("state_proj.", "embed_action_time.state_proj."),
    ("action_in_proj.", "embed_action_time.action_in_proj."),
    ("action_time_mlp_in.", "embed_action_time.action_time_mlp_in."),
    ("action_time_mlp_out.", "embed_action_time.action_time_mlp_out."),
)


def checkpoint_to_module_name(name: str) -> str:
    if name.startswith("model.paligemma_with_expert.") or name.startswith("model.state_proj."):
        name = name[len("model."):]  # LeRobot policy state dicts carry the policy's own "model." too
    for old, new in _PREFIX_MAP:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def row_noise(seeds: list[int], chunk: int, dim: int) -> torch.Tensor:
    """Noise drawn per row from its own seeded CPU generator, so a row's noise (and therefore its
    actions) is the same whether it runs alone or in a batch, and on any device."""
    rows = []
    for seed in seeds:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        rows.append(torch.randn(chunk, dim, generator=gen, dtype=torch.float32))
    return torch.stack(rows)


@torch.inference_mode()
def sample_actions_timed(
    model: PI0ForConditionalGeneration,
    *,
    state: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_attention_mask: torch.Tensor,
    noise: torch.Tensor,
    num_steps: int,
    timings: dict[str, float],
) -> torch.Tensor:
    """`PI0ForConditionalGeneration.sample_actions`, split so vision, prefill and flow are timed apart."""
    watch = Stopwatch(input_ids.device)
    inputs_embeds = model.model.embed_prefix(input_ids, pixel_values, pixel_attention_mask)
    watch.lap(timings, "vision")
    cache = model.model.vlm(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=attention_mask.cumsum(-1) - 1,
        token_type_ids=torch.zeros_like(inputs_embeds)[:, :, 0],
        use_cache=True,
    ).cache
    prefix_length = cache.get_seq_length()
    watch.lap(timings, "prefill")
    batch = input_ids.shape[0]
    dt = -1.0 / num_steps
    x = noise
    for step in range(num_steps):
        t = torch.full((batch,), 1.0 + step * dt, dtype=torch.float32, device=input_ids.device)
        out = model(state=state, noise=x, timestep=t, pixel_attention_mask=pixel_attention_mask,
                    attention_mask=attention_mask, cache=cache)
        cache.crop(prefix_length - cache.get_seq_length())  # steps must not attend to each other
        x = x + dt * out.logits
    watch.lap(timings, "flow")
    return x
