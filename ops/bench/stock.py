"""The stock paths policy_latency times ours against (issue 15's anchor): transformers' own loops on the same
weights and inputs, with the same preprocessing, so the ratio isolates the decode / flow implementation.

- OpenVLA: `LlamaForCausalLM.generate` with a DynamicCache from the spliced [BOS, patches, prompt] embeddings,
  greedy, n_steps new tokens (what upstream's predict_action runs once its remote code has built the inputs).
- pi0: `PI0ForConditionalGeneration.sample_actions` with every camera slot (empty ones as zero images and a
  pixel_attention_mask), in the stream dtype throughout, as transformers ships it.
"""
from __future__ import annotations

import torch

from workers.policies.base import Observation, Policy
from workers.policies.openvla.decode import splice_inputs
from workers.policies.openvla.policy import CAMERA, OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_flow import row_noise


@torch.inference_mode()
def openvla_generate(policy: OpenVLAPolicy, observations: list[Observation]) -> torch.Tensor:
    rows = [policy.prompt_ids(o.instruction) for o in observations]
    pixels = policy.pixel_batch([o.images[CAMERA] for o in observations], policy.device).to(policy.dtype)
    embeds, mask, _ = splice_inputs(policy.model, policy.model.encode_images(pixels), rows)
    n_steps = max(policy.stats[policy.unnorm_key(o)].action_dim for o in observations)
    lm = policy.model.language_model
    out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n_steps, min_new_tokens=n_steps,
                      do_sample=False, use_cache=True, pad_token_id=policy.cfg.pad_token_id)
    return out.cpu()


@torch.inference_mode()
def pi0_sample_actions(policy: Pi0Policy, observations: list[Observation]) -> torch.Tensor:
    size = policy.image_size
    blank = torch.zeros(3, size, size)
    pixels, present = [], []
    for obs in observations:
        have = [c in obs.images for c in policy.spec.cameras]
        pixels.append(torch.stack([policy.image(obs.images[c]) if h else blank
                                   for c, h in zip(policy.spec.cameras, have, strict=True)]))
        present.append(have)
    ours = policy._prefix(observations)
    seeds = [int(o.options.get("seed", 0)) for o in observations]
    noise = row_noise(seeds, policy.cfg.chunk_size, policy.cfg.max_action_dim).to(policy.device, policy.dtype)
    y = policy.model.sample_actions(
        state=policy._state(observations).to(policy.dtype), input_ids=ours["input_ids"],
        attention_mask=ours["attention_mask"], pixel_values=torch.stack(pixels).to(policy.device, policy.dtype),
        pixel_attention_mask=torch.tensor(present, device=policy.device), noise=noise)
    return y.float().cpu()


def stock_call(policy: Policy):
    """The stock function for this policy's family."""
    if isinstance(policy, OpenVLAPolicy):
        return lambda obs: openvla_generate(policy, obs)
    return lambda obs: pi0_sample_actions(policy, obs)
