"""pi0 inference on transformers' native PI0ForConditionalGeneration modules, written out here so that

- the vision tower runs only on the cameras a row actually has (empty slots cost nothing: issue 15);
- the fp32 islands LeRobot and openpi keep stay fp32 when the rest runs in bf16: the vision tower and
  projector, every RMSNorm weight, the state/action/time projections, the velocity head and the Euler
  integration (LeRobot PaliGemmaWithExpertModel.to_bfloat16_for_selected_params; PI0Pytorch.denoise_step);
- the KV-cache argument is passed under the name this transformers version declares (hf_compat).

Same maths as `PI0ForConditionalGeneration.sample_actions`: one prefix pass, then Euler steps on the
expert, the prefix cache cropped back after each step so steps never attend to each other.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from transformers import PI0ForConditionalGeneration

from workers.policies import flow_sampling
from workers.policies.hf_compat import cache_kwarg, output_cache
from workers.policies.timing import Stopwatch

FP32_NAMES = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "norm.",
              "embed_action_time", "action_out_proj")


def keep_fp32_islands(model: PI0ForConditionalGeneration) -> None:
    """Make the parameters the references keep in fp32 fp32 (a no-op for an fp32 model). Called on the
    freshly built model, before the checkpoint is copied in, so the islands receive its fp32 values."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in FP32_NAMES):
                param.data = param.data.float()


def stream_dtype(model: PI0ForConditionalGeneration) -> torch.dtype:
    """The dtype the transformer blocks run in (the islands aside)."""
    return model.model.dit.layers[0].self_attn.q_proj.weight.dtype


def row_noise(seeds: list[int], chunk: int, dim: int) -> torch.Tensor:
    """Noise drawn per row from its own seeded CPU generator, so a row's noise (and therefore its
    actions) is the same whether it runs alone or in a batch, and on any device."""
    rows = []
    for seed in seeds:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        rows.append(torch.randn(chunk, dim, generator=gen, dtype=torch.float32))
    return torch.stack(rows)


def embed_prefix(model: PI0ForConditionalGeneration, input_ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Text embeddings with the image placeholders replaced by the features of `images`: only the present
    cameras, (n_present, 3, H, W) in row-major order, the order their placeholders appear in."""
    vlm = model.model.vlm
    embeds = vlm.get_input_embeddings()(input_ids.masked_fill(input_ids == model.config.vlm_config.image_token_id, 0))
    placeholders = input_ids == model.config.vlm_config.image_token_id
    if images.shape[0]:
        tower_dtype = vlm.vision_tower.embeddings.patch_embedding.weight.dtype
        feats = vlm.get_image_features(images.to(tower_dtype)).pooler_output
        embeds = embeds.masked_scatter(placeholders[..., None], feats.to(embeds.dtype))
    return embeds


def prefix_cache(model: PI0ForConditionalGeneration, embeds: torch.Tensor, attention_mask: torch.Tensor):
    vlm = model.model.vlm
    out = vlm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=attention_mask.cumsum(-1) - 1,
              token_type_ids=torch.zeros_like(attention_mask), use_cache=True)
    return output_cache(out)


def velocity(model: PI0ForConditionalGeneration, state: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
             attention_mask: torch.Tensor, cache) -> torch.Tensor:
    """v(x, t) in fp32: projections in their own (fp32) dtype, the expert in the stream dtype."""
    head = model.embed_action_time
    suffix = head(state.to(head.state_proj.weight.dtype), x.to(head.action_in_proj.weight.dtype), t)
    out = model.model(action_embeds=suffix.to(stream_dtype(model)), attention_mask=attention_mask,
                      **cache_kwarg(model.model, cache))
    hidden = out.last_hidden_state[:, -model.config.chunk_size:]
    return model.action_out_proj(hidden.to(model.action_out_proj.weight.dtype)).float()


def cached_velocity(model: PI0ForConditionalGeneration, state: torch.Tensor, attention_mask: torch.Tensor,
                    cache) -> flow_sampling.Velocity:
    """The velocity field over a prefix cache, cropped back after each call so that steps never attend to each
    other. Under autograd (RTC's vector-Jacobian product) the cropped prefix is detached, so one step's graph
    never reaches into the next."""
    prefix_length = cache.get_seq_length()

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = velocity(model, state, x, t, attention_mask, cache)
        cache.crop(prefix_length - cache.get_seq_length())
        if torch.is_grad_enabled():
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
        return out

    return v


def integrate(model: PI0ForConditionalGeneration, state: torch.Tensor, noise: torch.Tensor,
              attention_mask: torch.Tensor, cache, num_steps: int) -> torch.Tensor:
    """Euler from t=1 (noise) to t=0 in fp32 over a prefix cache (flow_sampling.euler). No host
    synchronisation: pi0_graph captures this whole function."""
    return flow_sampling.euler(cached_velocity(model, state, attention_mask, cache), noise, num_steps)


Integrator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, int], torch.Tensor]


def sample_actions(
    model: PI0ForConditionalGeneration,
    *,
    state: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    images: torch.Tensor,
    noise: torch.Tensor,
    num_steps: int,
    timings: dict[str, float] | None = None,
    recompute_prefix: bool = False,
    flow: Integrator | None = None,
    guidance: flow_sampling.Guidance | None = None,
) -> torch.Tensor:
    """One prefix pass, then the Euler integration: `flow(state, noise, mask, cache, num_steps)` when given
    (pi0_graph's pool: a CUDA graph per shape), else `integrate`. `recompute_prefix` rebuilds the prefix
    cache at every step instead of cropping one back: slower, and the self-check's reference. `guidance`
    (real-time chunking) runs the guided Euler loop eagerly; with a vector-Jacobian product it runs under
    no_grad instead of inference_mode, so that autograd may differentiate through the expert."""
    with flow_sampling.sampling_mode(guidance):
        return _sample(model, state=state, input_ids=input_ids, attention_mask=attention_mask, images=images,
                       noise=noise, num_steps=num_steps, timings=timings, recompute_prefix=recompute_prefix,
                       flow=flow, guidance=guidance)


def _sample(model, *, state, input_ids, attention_mask, images, noise, num_steps, timings, recompute_prefix, flow,
            guidance) -> torch.Tensor:
    watch = Stopwatch(input_ids.device)
    embeds = embed_prefix(model, input_ids, images)
    watch.lap(timings, "vision")
    cache = prefix_cache(model, embeds, attention_mask)
    watch.lap(timings, "prefill")
    if recompute_prefix:
        x = flow_sampling.euler(_recomputing_velocity(model, state, embeds, attention_mask, cache), noise, num_steps,
                                guidance)
    elif guidance is not None:
        x = flow_sampling.euler(cached_velocity(model, state, attention_mask, cache), noise, num_steps, guidance)
    else:
        x = (flow or functools.partial(integrate, model))(state, noise, attention_mask, cache, num_steps)
    watch.lap(timings, "flow")
    return x


def _recomputing_velocity(model: PI0ForConditionalGeneration, state: torch.Tensor, embeds: torch.Tensor,
                          attention_mask: torch.Tensor, cache) -> flow_sampling.Velocity:
    """The velocity over a prefix cache rebuilt for every step but the first (the self-check's reference)."""
    calls = 0

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal calls, cache
        if calls:
            cache = prefix_cache(model, embeds, attention_mask)
        calls += 1
        return cached_velocity(model, state, attention_mask, cache)(x, t)

    return v
