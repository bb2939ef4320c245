"""Load-time self-checks: before a worker reports ready, the serving path is compared with a slower
reference computation on a short synthetic input, and a disagreement raises PolicySelfCheckError.

Why: a transformers upgrade (or downgrade) can change how the KV cache is passed and leave the model
running without it, still returning well-formed actions (issue 13). These checks catch that class of
fault on the machine that serves, in the dtype it serves in, at a cost of a few forward passes.
"""
from __future__ import annotations

import numpy as np
import torch

from workers.policies.base import Observation, Policy
from workers.policies.errors import PolicySelfCheckError

# The checks take the concrete policies (OpenVLAPolicy, Pi0Policy), which import this module to run them at
# load; they are typed as the shared interface here so that no import, even a typing one, points back.
OpenVLAPolicy = Pi0Policy = Policy

# Relative tolerances: fp32 paths agree to rounding; half precision reorders reductions with shape. The
# faults these checks exist for (a lost cache, a row reading another's prefix) move outputs by O(1).
# OpenVLA: a chosen token's logit gap below the recompute's best, over max|logit|.
REL_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 2e-2}
# pi0: actions in normalised units over max(1, max|a|); a 10-step bf16 flow drifts more than one argmax
# (the CUDA test of batch = singles allows 0.1 for the same reason).
PI0_REL_TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 5e-2}
INSTRUCTIONS = ("pick up the cup", "put the red block to the left of the green bowl then open the drawer")


def synthetic_image(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A smooth gradient plus noise: deterministic, and not constant (so the image reaches the output)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1.0, h)[:, None, None]
    return np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _tol(dtype: torch.dtype, table: dict[torch.dtype, float] = REL_TOL) -> float:
    return table.get(dtype, max(table.values()))


@torch.inference_mode()
def teacher_forced_logits(policy: OpenVLAPolicy, obs: Observation, tokens: torch.Tensor) -> torch.Tensor:
    """Full recompute, no cache: prefix + the chosen tokens in one pass; logits (n, n_bins) over action ids
    at each decode position."""
    from workers.policies.openvla.decode import splice_inputs

    model = policy.model
    patches = model.encode_images(policy.pixels(obs.images["primary"])[None].to(policy.device, policy.dtype))
    embeds, _, _ = splice_inputs(model, patches, [policy.prompt_ids(obs.instruction)])
    chosen = model.language_model.get_input_embeddings()(tokens[None, :-1].to(policy.device))
    full = torch.cat([embeds, chosen], dim=1)
    hidden = model.language_model.model(inputs_embeds=full, use_cache=False).last_hidden_state
    n = tokens.shape[0]
    lo, hi = policy._allowed_ids()
    last = hidden[0, -n:]
    return torch.nn.functional.linear(last, model.language_model.lm_head.weight[lo:hi]).float()


def _check_tokens(policy: OpenVLAPolicy, name: str, tokens: torch.Tensor, ref: torch.Tensor) -> None:
    """Each chosen token must be the recompute's argmax, or within tolerance of it (a near-tie)."""
    lo = policy._allowed_ids()[0]
    picked = ref.gather(1, (tokens.to(ref.device) - lo)[:, None])[:, 0]
    best = ref.max(dim=1).values
    scale = max(1.0, float(ref.abs().max()))
    gap = float((best - picked).max()) / scale
    if gap > _tol(policy.dtype):
        raise PolicySelfCheckError(
            policy.spec.name, name,
            f"a chosen token's logit is {gap:.3g} (relative) below the full recompute's best "
            f"(tolerance {_tol(policy.dtype):g}); tokens {tokens.tolist()} vs recompute "
            f"{(ref.argmax(1) + lo).tolist()}")


def check_openvla(policy: OpenVLAPolicy) -> None:
    """Cached batched decode and cached single decode, each against a full no-cache recompute."""
    key = sorted(policy.stats)[0]  # openvla-7b has many datasets and no default: name one explicitly
    batch = [Observation(images={"primary": synthetic_image(i)}, instruction=text, options={"unnorm_key": key})
             for i, text in enumerate(INSTRUCTIONS)]
    together = policy.decode_tokens(batch)
    for i, obs in enumerate(batch):
        alone = policy.decode_tokens([obs])[0]
        ref = teacher_forced_logits(policy, obs, alone)
        _check_tokens(policy, "cached decode = full recompute", alone, ref)
        ref_b = teacher_forced_logits(policy, obs, together[i])
        _check_tokens(policy, "batched decode = full recompute", together[i], ref_b)


def check_pi0(policy: Pi0Policy) -> None:
    """A batch of two (different cameras, prompt lengths) against each row alone, fixed noise; and the
    cached flow against a flow that recomputes the prefix at every step."""
    state = np.linspace(-1.0, 1.0, policy.spec.state_dim or 1)
    cams = policy.spec.cameras
    batch = [Observation(images={c: synthetic_image(i + j) for j, c in enumerate(cams[: 1 + i])},
                         instruction=text, state=state + i, options={"seed": 7 + i})
             for i, text in enumerate(INSTRUCTIONS)]
    together = policy.predict(batch)
    for obs, res in zip(batch, together, strict=True):
        alone = policy.predict([obs])[0].actions
        _compare(policy, "batch = singles", res.actions, alone)
    recomputed = policy.predict(batch[1:], recompute_prefix=True)[0].actions
    _compare(policy, "cached flow = prefix recomputed each step", together[1].actions, recomputed)


def _compare(policy: Pi0Policy, name: str, got: np.ndarray, ref: np.ndarray) -> None:
    stats = policy.action_stats
    # Compare in normalised units so a wide joint does not hide a narrow one.
    a, b = (np.asarray(got) - stats.mean) / (stats.std + 1e-6), (np.asarray(ref) - stats.mean) / (stats.std + 1e-6)
    scale = max(1.0, float(np.abs(b).max()))
    diff = float(np.abs(a - b).max()) / scale
    tol = _tol(policy.dtype, PI0_REL_TOL)
    if not np.all(np.isfinite(a)) or diff > tol:
        raise PolicySelfCheckError(policy.spec.name, name, f"max relative difference {diff:.3g} > tolerance {tol:g}")
