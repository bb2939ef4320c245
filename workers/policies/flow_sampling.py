"""Euler sampling of a flow-matching action head, with real-time chunking (RTC) guidance, for every flow
policy (pi0 and SmolVLA now; pi0.5 calls the same functions with its own velocity field).

Real-time chunking (Black, Galliker, Levine, "Real-Time Execution of Action Chunking Flow Policies",
NeurIPS 2025): while chunk n+1 is computed the robot keeps executing chunk n, so the first `inference_delay`
actions of the new chunk are already decided. Sampling is then inpainting: each Euler step corrects the
velocity with pseudo-inverse guidance towards the executing actions, under a soft mask over time (ones for
the frozen `inference_delay` steps, decaying to zero at `execution_horizon`), with the guidance weight clipped
at `max_guidance_weight`.

Convention, as openpi and LeRobot: t = 1 is noise, t = 0 the actions, x <- x + dt * v with dt = -1/N, so the
data estimate at time t is x1 = x - t * v(x, t). The guided velocity is v - w(t) * J^T ((prefix - x1) * W),
J = d x1 / d x; `jacobian="vjp"` computes J^T e by a vector-Jacobian product through the velocity field (the
paper's algorithm 1), `jacobian="identity"` takes J = I, which is what LeRobot 0.6.1's RTCProcessor computes
(its velocity is evaluated before x_t starts requiring grad, so autograd sees x1 = x_t - t * const) and costs
no backward pass. Facts from LeRobot 0.6.1 (lerobot/policies/rtc/modeling_rtc.py), all matched here: the
prefix is in the model's normalised space, zero-padded in time and in the padded action dimensions; the
horizon is cut to the prefix length and the delay to the horizon; w(t) with tau = 1 - t is
min(max, (1 - tau) / tau * ((1 - tau)^2 + tau^2) / (1 - tau)^2), infinite at t = 1 and so the maximum there.

A flow policy adds RTC with four calls: `PolicySpec(real_time_chunking=True)`; `parse(obs.options, action_dim,
chunk_length)` in `validate`; in `predict`, `guidance = batch_guidance(observations, ..., normalise, width,
device)` (normalise: the exact inverse of its action un-normalisation), then, under `sampling_mode(guidance)`
(not inference_mode when a row asks for the VJP: autograd needs the prefix cache), its prefix pass and
`euler(velocity, noise, steps, guidance)` over its own velocity field.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.policies.errors import PolicyInputError

OPTION = "rtc"  # Observation.options key
SCHEDULES = ("linear", "exp", "ones", "zeros")  # LeRobot's RTCAttentionSchedule values, lower-case
JACOBIANS = ("vjp", "identity")
DEFAULT_EXECUTION_HORIZON = 10  # LeRobot RTCConfig defaults
DEFAULT_MAX_GUIDANCE_WEIGHT = 10.0
DEFAULT_SCHEDULE = "linear"
DEFAULT_JACOBIAN = "vjp"
MAX_GUIDANCE_WEIGHT_LIMIT = 1000.0

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, T, A), t (B,)) -> v (B, T, A), fp32


@dataclass(frozen=True)
class ChunkPrefix:
    """One request's RTC input, validated: the previous chunk's actions the robot will still execute, the next
    one first (robot units, as the service returned them), and how to guide towards them."""

    actions: np.ndarray  # (n, D) float64
    inference_delay: int
    execution_horizon: int
    max_guidance_weight: float
    schedule: str
    jacobian: str


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= int(value) <= high:
        raise PolicyInputError(field, f"must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def parse(options: Mapping[str, Any], action_dim: int, chunk_length: int) -> ChunkPrefix | None:
    """The row's `options["rtc"]` checked against the policy's action space; None when absent."""
    spec = options.get(OPTION)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise PolicyInputError(OPTION, "must be an object with prev_actions and inference_delay")
    unknown = sorted(set(spec) - {"prev_actions", "inference_delay", "execution_horizon", "max_guidance_weight",
                                  "prefix_attention_schedule", "jacobian"})
    if unknown:
        raise PolicyInputError(OPTION, f"unknown field(s) {unknown}")
    try:
        actions = np.asarray(spec.get("prev_actions"), dtype=np.float64)
    except (TypeError, ValueError):
        raise PolicyInputError(f"{OPTION}.prev_actions", "must be a list of action vectors (numbers)") from None
    if actions.ndim != 2 or not 1 <= actions.shape[0] <= chunk_length or actions.shape[1] != action_dim:
        raise PolicyInputError(f"{OPTION}.prev_actions", f"must have shape (n, {action_dim}) with 1 <= n <= "
                               f"{chunk_length} (the model's chunk); got {actions.shape}")
    if not np.isfinite(actions).all():
        raise PolicyInputError(f"{OPTION}.prev_actions", "must be finite numbers")
    if "inference_delay" not in spec:
        raise PolicyInputError(f"{OPTION}.inference_delay", "is required with prev_actions")
    weight = spec.get("max_guidance_weight", DEFAULT_MAX_GUIDANCE_WEIGHT)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= MAX_GUIDANCE_WEIGHT_LIMIT:
        raise PolicyInputError(f"{OPTION}.max_guidance_weight", f"must be a number in (0, {MAX_GUIDANCE_WEIGHT_LIMIT}]")
    schedule = spec.get("prefix_attention_schedule", DEFAULT_SCHEDULE)
    if schedule not in SCHEDULES:
        raise PolicyInputError(f"{OPTION}.prefix_attention_schedule", f"must be one of {', '.join(SCHEDULES)}")
    jacobian = spec.get("jacobian", DEFAULT_JACOBIAN)
    if jacobian not in JACOBIANS:
        raise PolicyInputError(f"{OPTION}.jacobian", f"must be one of {', '.join(JACOBIANS)}")
    return ChunkPrefix(
        actions=actions, inference_delay=_int(spec["inference_delay"], f"{OPTION}.inference_delay", 0, chunk_length),
        execution_horizon=_int(spec.get("execution_horizon", min(DEFAULT_EXECUTION_HORIZON, chunk_length)),
                               f"{OPTION}.execution_horizon", 1, chunk_length),
        max_guidance_weight=float(weight), schedule=schedule, jacobian=jacobian)


def prefix_weights(delay: int, horizon: int, total: int, schedule: str) -> torch.Tensor:
    """The soft mask over the chunk's time steps (float32, (total,)): 1 on the first `delay` steps, then for
    `linear` the interior of linspace(1, 0) up to `horizon`, for `exp` that times expm1(.)/(e - 1); `ones` is
    1 up to the horizon, `zeros` 1 only on the delay; 0 from the horizon on."""
    delay = min(delay, horizon)
    w = torch.zeros(total, dtype=torch.float32)
    if schedule == "zeros":
        w[:delay] = 1.0
        return w
    if schedule == "ones":
        w[:horizon] = 1.0
        return w
    span = min(horizon, total) - delay
    if horizon > delay and span > 0:
        ramp = torch.linspace(1, 0, span + 2)[1:-1]
        if schedule == "exp":
            ramp = ramp * torch.expm1(ramp).div(math.e - 1)
        w[delay : delay + span] = ramp
    w[: min(delay, total)] = 1.0
    return w


@dataclass
class Guidance:
    """A batch's guidance (rows without RTC have zero weights, so their velocity is unchanged)."""

    target: torch.Tensor  # (B, T, A) the executing actions in model space, zero-padded
    weights: torch.Tensor  # (B, T, 1)
    max_weight: torch.Tensor  # (B, 1, 1)
    vjp: torch.Tensor  # (B, 1, 1) bool: this row's J^T comes from autograd
    any_vjp: bool


def guidance_for(rows: Sequence[ChunkPrefix | None], normalise: Callable[[np.ndarray], np.ndarray], chunk: int,
                 width: int, device: torch.device | str) -> Guidance | None:
    """`normalise`: robot units -> the model's space (the exact inverse of the policy's un-normalisation).
    None when no row asks for RTC."""
    if all(r is None for r in rows):
        return None
    batch = len(rows)
    target, weights = torch.zeros(batch, chunk, width), torch.zeros(batch, chunk, 1)
    max_weight, vjp = torch.ones(batch, 1, 1), torch.zeros(batch, 1, 1, dtype=torch.bool)
    for b, row in enumerate(rows):
        if row is None:
            continue
        z = torch.from_numpy(normalise(row.actions)).float()
        n = z.shape[0]
        target[b, :n, : z.shape[1]] = z
        horizon = min(row.execution_horizon, n)
        weights[b, :, 0] = prefix_weights(row.inference_delay, horizon, chunk, row.schedule)
        max_weight[b] = row.max_guidance_weight
        vjp[b] = row.jacobian == "vjp"
    return Guidance(target.to(device), weights.to(device), max_weight.to(device), vjp.to(device),
                    bool(vjp.any()))


def batch_guidance(observations: Sequence[Any], action_dim: int, chunk_length: int,
                   normalise: Callable[[np.ndarray], np.ndarray], width: int,
                   device: torch.device | str) -> Guidance | None:
    """`guidance_for` over a batch of validated observations (their `options["rtc"]`): what a flow policy's
    `predict` calls, with `width` its padded action size (pi0's max_action_dim)."""
    rows = [parse(o.options, action_dim, chunk_length) for o in observations]
    return guidance_for(rows, normalise, chunk_length, width, device)


def sampling_mode(guidance: Guidance | None):
    """The context to sample under: inference_mode, unless a row's guidance needs autograd (no_grad then, with
    the vector-Jacobian product enabling grad inside each step)."""
    return torch.no_grad() if guidance is not None and guidance.any_vjp else torch.inference_mode()


def guidance_weight(time: float, max_weight: torch.Tensor) -> torch.Tensor:
    """min(max, (1 - tau) / tau / r^2) with tau = 1 - t, in float32 as LeRobot; the maximum at t = 1."""
    tau = torch.tensor(1.0 - time, dtype=torch.float32)
    inv_r2 = ((1 - tau) ** 2 + tau**2) / (1 - tau) ** 2
    w = ((1 - tau) / tau * inv_r2).to(max_weight.device)
    w = torch.where(torch.isfinite(w), w, max_weight)
    return torch.minimum(w, max_weight)


def guided_velocity(velocity: Velocity, x: torch.Tensor, t: torch.Tensor, time: float, g: Guidance) -> torch.Tensor:
    """One guided velocity: v - w(t) * J^T ((target - (x - t v)) * W)."""
    if not g.any_vjp:
        v = velocity(x, t)
        correction = (g.target - (x - time * v)) * g.weights
    else:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("RTC with jacobian='vjp' needs autograd: run the policy under torch.no_grad(), "
                               "not torch.inference_mode()")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = velocity(xg, t)
            x1 = xg - time * v
            err = ((g.target - x1) * g.weights).detach()
            (jte,) = torch.autograd.grad(x1, xg, err)
        v = v.detach()
        correction = torch.where(g.vjp, jte, err)
    return v - guidance_weight(time, g.max_weight) * correction


def euler(velocity: Velocity, noise: torch.Tensor, num_steps: int, guidance: Guidance | None = None) -> torch.Tensor:
    """Euler from t = 1 (noise) to t = 0 in fp32: x <- x + dt * v at t = 1 + step * dt, as openpi and LeRobot;
    with `guidance`, each velocity is the guided one."""
    dt = -1.0 / num_steps
    x = noise.float()
    for step in range(num_steps):
        time = 1.0 + step * dt
        t = torch.full((x.shape[0],), time, dtype=torch.float32, device=x.device)
        v = velocity(x, t) if guidance is None else guided_velocity(velocity, x, t, time, guidance)
        x = x + dt * v
    return x
