"""pi0.5 served like pi0 (whose request path it shares: cameras, prefix layout, noise per row, self-check), with
what pi0.5 does differently (openpi `Pi0Config(pi05=True)`, LeRobot 0.6.1 `PI05Policy` and its processors):

- state and actions are normalised by quantiles to [-1, 1] (layouts.py says with which epsilon);
- the normalised state is discretised into 256 bins (`np.digitize(s, linspace(-1, 1, 257)[:-1]) - 1`, so a
  value below -1 is bin -1 and above 1 is bin 255) and written into the prompt:
  `"Task: {instruction}, State: {b1 b2 ...};\\nAction: "`, the instruction cleaned as openpi does (strip,
  "_" and "\\n" to spaces), BOS first, cut to max_token_len (200);
- the state is nowhere else in the model; the expert is conditioned on the flow time only (model.py);
- openpi's `discrete_state_input=False` (its pi05_libero; the load option `discrete_state=false`): no state at
  all (the spec says state_dim None), the prompt pi0's: BOS, the cleaned instruction, "\n" tokenized alone.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PI0Config

from workers.policies import flow_sampling
from workers.policies.base import Observation
from workers.policies.checkpoint import require_dir
from workers.policies.common import build_and_load, load_tokenizer
from workers.policies.devices import resolve_device, resolve_dtype
from workers.policies.errors import CheckpointError
from workers.policies.pi0 import Pi0Policy, clean_prompt
from workers.policies.pi0_flow import keep_fp32_islands
from workers.policies.pi05.layouts import Pi05Layout, detect
from workers.policies.pi05.model import FP32_NAMES, Pi05Model, sample_actions

STATE_BINS = 256


class Quantiles:
    """q01/q99 of one feature. `mean`/`std` are the centre and half-range: quantile normalisation is the
    affine map (x - mean) / std, which is how the self-check compares actions in normalised units."""

    def __init__(self, entry: dict[str, list[float]], eps: float, openpi_eps: bool):
        self.q01 = np.asarray(entry["q01"], dtype=np.float64)
        self.q99 = np.asarray(entry["q99"], dtype=np.float64)
        span = self.q99 - self.q01
        # openpi: range + 1e-6 both ways; LeRobot: eps only where the range is zero.
        self.span = span + eps if openpi_eps else np.where(span == 0, eps, span)
        self.mean, self.std = self.q01 + self.span / 2, self.span / 2

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.q01) / self.span * 2.0 - 1.0

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        return (y + 1.0) / 2.0 * self.span + self.q01


class Pi05Policy(Pi0Policy):
    def __init__(self, name: str, model: Pi05Model, tokenizer: Any, layout: Pi05Layout, device: torch.device):
        self.max_token_len, self.discrete_state = layout.max_token_len, layout.discrete_state
        self.state_stats = Quantiles(layout.stats["state"], layout.eps, layout.openpi_eps)
        self.action_stats = Quantiles(layout.stats["actions"], layout.eps, layout.openpi_eps)
        if len(self.action_stats.q01) > model.config.max_action_dim:
            raise CheckpointError(f"the action statistics ({len(self.action_stats.q01)}) are wider than "
                                  f"max_action_dim ({model.config.max_action_dim})")
        self.setup(name, "pi05", model, tokenizer, device, layout.name, layout.image_convention, layout.meta,
                   len(self.state_stats.q01) if self.discrete_state else None)

    @classmethod
    def load(cls, name: str, path: Path, *, dtype: str = "auto", device: str = "auto",
             options: Mapping[str, str] | None = None) -> Pi05Policy:
        path = require_dir(path)
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"asset_id", "discrete_state"})
        if unknown:
            raise CheckpointError(f"unknown pi0.5 option(s) {unknown}; known: ['asset_id', 'discrete_state'] "
                                  "(openpi layout)")
        layout = detect(path, asset_id=opts.get("asset_id"), discrete_state=opts.get("discrete_state"))
        try:
            cfg = PI0Config(**layout.config)
        except Exception as exc:  # @strict config validation raises several types
            raise CheckpointError(f"{str(path / 'config.json')!r} does not give valid pi0.5 sizes: {exc}") from exc
        cfg._attn_implementation = "sdpa"
        cfg.vlm_config._attn_implementation = "sdpa"
        dev = resolve_device(device)
        model = build_and_load(lambda: Pi05Model(cfg), path, dev, resolve_dtype(dtype, dev), rename=layout.rename,
                               ignorable=layout.ignorable,
                               before_load=lambda m: keep_fp32_islands(m, FP32_NAMES))
        return cls(name, model, load_tokenizer(path), layout, dev)

    def state_bins(self, state: np.ndarray) -> np.ndarray:
        """The normalised state (float32, as both references compute it) in 256 bins over [-1, 1]."""
        s = self.state_stats
        z = (np.asarray(state, dtype=np.float32) - s.q01.astype(np.float32)) / s.span.astype(np.float32) * 2 - 1
        return np.digitize(z, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1

    def prompt_text(self, obs: Observation) -> str:
        state = " ".join(str(int(b)) for b in self.state_bins(obs.state))
        return f"Task: {clean_prompt(obs.instruction)}, State: {state};\nAction: "

    def prompt_ids(self, obs: Observation) -> list[int]:
        if not self.discrete_state:  # openpi's pi0 format: "\n" tokenized on its own
            newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
            return (self.bos_tokens(clean_prompt(obs.instruction), self.max_token_len) + newline)[: self.max_token_len]
        return self.bos_tokens(self.prompt_text(obs), self.max_token_len)

    def _flow(self, observations: list[Observation], inputs: dict[str, torch.Tensor], noise: torch.Tensor,
              timings: dict[str, float], recompute_prefix: bool,
              guidance: flow_sampling.Guidance | None) -> torch.Tensor:
        return sample_actions(self.model, noise=noise, num_steps=self.cfg.num_inference_steps, timings=timings,
                              recompute_prefix=recompute_prefix, guidance=guidance, **inputs)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        return self.action_stats.unnormalize(y[..., : len(self.action_stats.q01)])

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Robot units -> the model's space (RTC's executing actions): the exact inverse of `unnormalize`."""
        return self.action_stats.normalize(actions)
