"""Load-time self-checks: before a worker reports ready, the serving path is compared with a slower
reference computation on a short synthetic input, and a disagreement raises PolicySelfCheckError.

Why: a transformers upgrade (or downgrade) can change how the KV cache is passed and leave the model
running without it, still returning well-formed actions (issue 13). These checks catch that class of
fault on the machine that serves, in the dtype it serves in, at a cost of a few forward passes.
"""
from __future__ import annotations

from collections.abc import Mapping

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
    # `not gap <= tol`, never `gap > tol`: a NaN gap (a NaN weight makes every logit NaN) must fail.
    if not gap <= _tol(policy.dtype) or not bool(torch.isfinite(ref).all()):
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


def _compare(policy: Pi0Policy, name: str, got: np.ndarray, ref: np.ndarray, *, factor: float = 1.0) -> None:
    stats = policy.action_stats
    # Compare in normalised units so a wide joint does not hide a narrow one.
    a, b = (np.asarray(got) - stats.mean) / (stats.std + 1e-6), (np.asarray(ref) - stats.mean) / (stats.std + 1e-6)
    scale = max(1.0, float(np.abs(b).max()))
    diff = float(np.abs(a - b).max()) / scale
    tol = _tol(policy.dtype, PI0_REL_TOL) * factor
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and diff <= tol):
        raise PolicySelfCheckError(policy.spec.name, name, f"max relative difference {diff:.3g} > tolerance {tol:g}")


# --- Registered outputs: the fixed inputs' outputs recorded by `vlaapi models register` (fingerprint.py). ---
# A record made in the serving dtype on the serving kind of device is held to that dtype's tolerance; one made
# in another (the float32 CPU record build-tiny writes, checked by a bf16 GPU worker) to twice it, because the
# two runs round differently all the way through (docs/models.md, "Fingerprints").
CROSS_FACTOR = 2.0


def fixed_observation(policy: Policy) -> Observation:
    """The deterministic observation a checkpoint's outputs are registered on: every camera, a fixed seed."""
    if policy.spec.family == "openvla":
        key = sorted(policy.stats)[0]  # type: ignore[attr-defined]
        return Observation(images={"primary": synthetic_image(101, 224, 224)}, instruction=INSTRUCTIONS[1],
                           options={"unnorm_key": key})
    state = np.linspace(-1.0, 1.0, policy.spec.state_dim or 1)
    return Observation(images={c: synthetic_image(101 + j) for j, c in enumerate(policy.spec.cameras)},
                       instruction=INSTRUCTIONS[1], state=state, options={"seed": 0})


def record_outputs(policy: Policy) -> dict:
    """The outputs to store in the fingerprint, with the dtype and device kind they were computed in."""
    import transformers

    obs = fixed_observation(policy)
    actions = policy.predict([obs])[0].actions
    rec = {"family": policy.spec.family, "dtype": policy.spec.dtype, "device": torch.device(policy.spec.device).type,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "actions": np.asarray(actions, dtype=np.float64).tolist()}
    if policy.spec.family == "openvla":
        tokens = policy.decode_tokens([obs])[0]  # type: ignore[attr-defined]
        rec["tokens"] = tokens.cpu().tolist()
        rec["logits"] = teacher_forced_logits(policy, obs, tokens).cpu().double().tolist()
    if not all(np.all(np.isfinite(np.asarray(rec[k], dtype=np.float64))) for k in ("actions", "logits") if k in rec):
        raise PolicySelfCheckError(policy.spec.name, "registered outputs", "the fixed inputs give non-finite outputs")
    return rec


def pick_record(policy: Policy, records: list[dict], options: Mapping[str, str] | None = None
                ) -> tuple[dict, float] | None:
    """The record to compare with and the factor on the tolerance: same dtype and device kind first, then a
    float32 one, then any; only among records made with the same load options (an option such as OpenVLA's
    center_crop changes what the model sees, so another option's outputs prove nothing)."""
    wanted = dict(options or {})
    records = [r for r in records if dict(r.get("options") or {}) == wanted]
    device = torch.device(policy.spec.device).type
    same = [r for r in records if r.get("dtype") == policy.spec.dtype and r.get("device") == device]
    if same:
        return same[0], 1.0
    others = sorted(records, key=lambda r: r.get("dtype") != "float32")
    return (others[0], CROSS_FACTOR) if others else None


def check_registered_outputs(policy: Policy, records: list[dict], options: Mapping[str, str] | None = None) -> None:
    """Raise PolicySelfCheckError unless the fixed inputs give the registered outputs (within tolerance)."""
    picked = pick_record(policy, records, options)
    if picked is None:
        opts = "".join(f" --option {k}={v}" for k, v in sorted((options or {}).items()))
        detail = (f"the fingerprint records no outputs for these load options; register the checkpoint with them "
                  f"(vlaapi models register DIR{opts})" if opts else
                  "the fingerprint records no outputs; register the checkpoint again")
        raise PolicySelfCheckError(policy.spec.name, "registered outputs", detail)
    rec, factor = picked
    where = f"the registered {rec.get('dtype')}/{rec.get('device')} record"
    obs = fixed_observation(policy)
    if policy.spec.family == "openvla":
        _check_registered_tokens(policy, obs, rec, factor, where)
    else:
        ref = np.asarray(rec["actions"], dtype=np.float64)
        got = policy.predict([obs])[0].actions
        if got.shape != ref.shape:
            raise PolicySelfCheckError(policy.spec.name, "registered outputs",
                                       f"actions of shape {got.shape}, {where} has {ref.shape}")
        _compare(policy, f"registered outputs ({where})", got, ref, factor=factor)


def _check_registered_tokens(policy: OpenVLAPolicy, obs: Observation, rec: dict, factor: float, where: str) -> None:
    """Logits teacher-forced on the registered tokens must match the registered logits; the tokens served now
    must be the registered ones up to the first near-tie (after it they see another prefix)."""
    ref = torch.tensor(rec["logits"], dtype=torch.float64)
    reg_tokens = torch.tensor(rec["tokens"])
    now = teacher_forced_logits(policy, obs, reg_tokens).double().cpu()
    tol = _tol(policy.dtype) * factor
    scale = max(1.0, float(ref.abs().max()))
    gap = float((now - ref).abs().max()) / scale if now.shape == ref.shape else float("inf")
    name = policy.spec.name
    if not gap <= tol:
        raise PolicySelfCheckError(name, "registered outputs", f"action logits differ from {where} by {gap:.3g} "
                                   f"(relative; tolerance {tol:g})")
    served = policy.decode_tokens([obs])[0].cpu()
    lo = policy._allowed_ids()[0]
    for i, (a, b) in enumerate(zip(served.tolist(), reg_tokens.tolist(), strict=False)):
        if a != b:
            tie = float(ref[i, b - lo] - ref[i, a - lo]) / scale
            if not tie <= tol:
                raise PolicySelfCheckError(name, "registered outputs", f"token {i} is {a}, {where} has {b} "
                                           f"(logit gap {tie:.3g} relative, tolerance {tol:g})")
            break
