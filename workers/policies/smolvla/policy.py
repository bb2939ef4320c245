"""SmolVLA served: LeRobot's preprocessing, the flow (flow.py), LeRobot's un-normalisation.

Preprocessing as LeRobot 0.6.1's SmolVLA pipeline and `SmolVLAPolicy.prepare_images/prepare_state`:
- prompt: a newline appended unless it ends with one (NewLineTaskProcessorStep), then the VLM's tokenizer
  as called by TokenizerProcessorStep (its own special-token rule, truncated to tokenizer_max_length);
- images: as float in [0, 1], torch bilinear (no antialias) to fit inside the square keeping the aspect
  ratio (sides truncated), zero-padded on the left and top, then `* 2 - 1` (the same function as LeRobot
  <= 0.3's pi0: preprocess.resize_with_pad_top_left); only the cameras a row has are embedded;
- state: (x - mean) / (std + eps), zero-padded to max_state_dim; actions: the first D of the chunk,
  `y * std + mean`.
Half precision as LeRobot runs a pretrained SmolVLA: the VLM in bf16/fp16, the expert and the projections in
float32 (model.HALF_PREFIX).
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.policies import flow_sampling
from workers.policies.base import Observation, Policy, PolicyResult, PolicySpec
from workers.policies.checkpoint import require_dir
from workers.policies.common import (
    EE_DELTA_UNITS,
    build_and_load,
    check_seed,
    check_state,
    load_tokenizer,
    timings_copy,
    zscore_padded,
)
from workers.policies.devices import dtype_name, resolve_device, resolve_dtype
from workers.policies.errors import CheckpointError
from workers.policies.pi0 import Stats
from workers.policies.pi0_flow import row_noise
from workers.policies.preprocess import check_fits, resize_with_pad_top_left
from workers.policies.selfcheck import check_pi0
from workers.policies.smolvla.flow import sample_actions
from workers.policies.smolvla.layout import Layout, detect, wanted
from workers.policies.smolvla.model import SmolVLAModel, keep_fp32_outside_vlm
from workers.policies.timing import Stopwatch


class SmolVLAPolicy(Policy):
    def __init__(self, name: str, model: SmolVLAModel, tokenizer: Any, layout: Layout, device: torch.device):
        self.model, self.tokenizer, self.device, self.arch = model, tokenizer, device, layout.arch
        self.dtype = model.vlm_with_expert.text_model.layers[0].self_attn.q_proj.weight.dtype
        self.state_stats = Stats(layout.stats["state"], "state")
        self.action_stats = Stats(layout.stats["actions"], "actions")
        self.eps = layout.eps
        dim, state_dim = len(self.action_stats.mean), len(self.state_stats.mean)
        if dim > self.arch.max_action_dim or state_dim > self.arch.max_state_dim:
            raise CheckpointError("the statistics are wider than the model's max_action_dim/max_state_dim")
        self.spec = PolicySpec(
            name=name, family="smolvla", action_dim=dim, chunk_length=self.arch.chunk_size, cameras=layout.cameras,
            unnorm_keys=[], default_unnorm_key=None, action_type="robot_specific",
            units=list(EE_DELTA_UNITS if dim == 7 else ["unspecified"] * dim), state_dim=state_dim,
            dtype=dtype_name(self.dtype), device=str(device), real_time_chunking=True, request_options=["seed", "rtc"])

    @classmethod
    def load(cls, name: str, path: Path, *, dtype: str = "auto", device: str = "auto",
             options: Mapping[str, str] | None = None) -> SmolVLAPolicy:
        path = require_dir(path)
        if options:
            raise CheckpointError(f"unknown SmolVLA option(s) {sorted(options)}; SmolVLA takes none")
        layout = detect(path)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        model = build_and_load(lambda: SmolVLAModel(layout.vlm_config, layout.arch), path, dev, dt,
                               rename=layout.rename, ignorable=layout.ignorable, expected_filter=wanted,
                               before_load=keep_fp32_outside_vlm)
        return cls(name, model, load_tokenizer(layout.vlm_dir), layout, dev)

    def validate(self, obs: Observation) -> None:
        super().validate(obs)
        check_state(obs.state, self.spec.state_dim, required=True)
        check_seed(obs.options)
        for cam, img in obs.images.items():
            check_fits(f"images.{cam}", img, self.arch.image_size)
        flow_sampling.parse(obs.options, self.spec.action_dim, self.spec.chunk_length)

    def text_ids(self, instruction: str) -> list[int]:
        text = instruction if instruction.endswith("\n") else instruction + "\n"
        return list(self.tokenizer(text, truncation=True, max_length=self.arch.tokenizer_max_length)["input_ids"])

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        a = self.action_stats
        return y[..., : len(a.mean)] * a.std + a.mean

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Robot units -> the model's space, the exact inverse of `unnormalize` (RTC's executing actions)."""
        a = self.action_stats
        return (actions - a.mean) / a.std

    @torch.no_grad()  # sample_actions picks inference_mode unless a row's RTC needs autograd
    def predict(self, observations: list[Observation], *, recompute_prefix: bool = False) -> list[PolicyResult]:
        timings: dict[str, float] = {}
        watch = Stopwatch(self.device)
        seeds = [o.options.get("seed", secrets.randbits(63)) for o in observations]
        noise = row_noise(seeds, self.arch.chunk_size, self.arch.max_action_dim).to(self.device)
        present = [[c for c in self.spec.cameras if c in o.images] for o in observations]
        images = [resize_with_pad_top_left(o.images[c], self.arch.image_size) for o, cams in
                  zip(observations, present, strict=True) for c in cams]
        pixels = torch.stack(images).to(self.device)
        tokens = [self.text_ids(o.instruction) for o in observations]
        s = self.state_stats
        state = zscore_padded([o.state for o in observations], s.mean, s.std, self.eps, self.arch.max_state_dim)
        guidance = flow_sampling.batch_guidance(observations, self.spec.action_dim, self.spec.chunk_length,
                                                self.normalize_actions, self.arch.max_action_dim, self.device)
        watch.lap(timings, "preprocess")
        y = sample_actions(self.model, images=pixels, cameras_per_row=[len(c) for c in present], token_rows=tokens,
                           state=state.to(self.device), noise=noise, timings=timings, recompute_prefix=recompute_prefix,
                           guidance=guidance)
        actions = self.unnormalize(y.double().cpu().numpy())
        return [PolicyResult(actions=row, action_type=self.spec.action_type, units=list(self.spec.units),
                             timings_ms=timings_copy(timings)) for row in actions]

    def self_check(self) -> None:
        """A batch of two (different cameras and prompts) against each row alone, fixed noise; the cached
        prefix against one recomputed at every step (the flow checks pi0 and SmolVLA share)."""
        check_pi0(self)
