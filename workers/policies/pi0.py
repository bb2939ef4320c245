"""pi0 on transformers' native PI0ForConditionalGeneration, loaded through our strict loader.

Checkpoint directory: config.json (a PI0Config), safetensors, tokenizer files, and norm_stats.json in
openpi's layout ({"norm_stats": {"state": {mean, std}, "actions": {mean, std}}}); optional top-level
"cameras", "action_type" and "units" there describe the robot (a transformers checkpoint has no place
for them). pi0 normalises with z-scores (pi0.5/FAST use quantiles; not this class).
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PI0Config, PI0ForConditionalGeneration

from workers.policies.base import Observation, Policy, PolicyResult, PolicySpec
from workers.policies.checkpoint import read_json, require_dir
from workers.policies.common import EE_DELTA_UNITS, build_and_load, check_state, load_tokenizer, timings_copy
from workers.policies.devices import dtype_name, resolve_device, resolve_dtype
from workers.policies.errors import CheckpointError, PolicyInputError
from workers.policies.pi0_flow import checkpoint_to_module_name, row_noise, sample_actions_timed
from workers.policies.preprocess import normalize, resize_with_pad
from workers.policies.timing import Stopwatch

OPENPI_CAMERAS = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
EPS = 1e-8  # the processor adds it to std; the inverse must use the same std + eps
MAX_TOKEN_LEN = 48  # openpi's max_token_len for pi0 (text part: BOS + prompt + "\n")


class Stats:
    def __init__(self, entry: dict[str, Any], name: str):
        try:
            self.mean = np.asarray(entry["mean"], dtype=np.float64)
            self.std = np.asarray(entry["std"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"norm_stats.{name} needs mean and std") from exc
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise CheckpointError(f"norm_stats.{name} mean/std shapes differ")


class Pi0Policy(Policy):
    def __init__(
        self, name: str, model: PI0ForConditionalGeneration, tokenizer: Any, meta: dict[str, Any], device: torch.device
    ):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.cfg: PI0Config = model.config
        self.dtype = next(model.parameters()).dtype
        stats = meta.get("norm_stats", meta)
        self.state_stats, self.action_stats = Stats(stats["state"], "state"), Stats(stats["actions"], "actions")
        self.image_token_id = int(self.cfg.vlm_config.image_token_id)
        self.image_size = int(self.cfg.vlm_config.vision_config.image_size)
        self.tokens_per_image = (self.image_size // int(self.cfg.vlm_config.vision_config.patch_size)) ** 2
        dim = len(self.action_stats.mean)
        if dim > self.cfg.max_action_dim or len(self.state_stats.mean) > self.cfg.max_state_dim:
            raise CheckpointError("norm_stats are wider than the model's max_action_dim/max_state_dim")
        self.spec = PolicySpec(
            name=name, family="pi0", action_dim=dim, chunk_length=int(self.cfg.chunk_size),
            cameras=list(meta.get("cameras", OPENPI_CAMERAS)), unnorm_keys=[], default_unnorm_key=None,
            action_type=meta.get("action_type", "robot_specific"),
            units=list(meta.get("units", EE_DELTA_UNITS if dim == 7 else ["unspecified"] * dim)),
            state_dim=len(self.state_stats.mean), dtype=dtype_name(self.dtype), device=str(device),
        )

    @classmethod
    def load(cls, name: str, path: Path, *, dtype: str = "auto", device: str = "auto") -> Pi0Policy:
        path = require_dir(path)
        try:
            cfg = PI0Config.from_json_file(str(path / "config.json"))
        except Exception as exc:  # @strict config validation raises several types
            raise CheckpointError(f"{str(path / 'config.json')!r} is not a valid PI0Config: {exc}") from exc
        cfg._attn_implementation = "sdpa"  # flash-attn would drop the bidirectional mask (see transformers)
        dev = resolve_device(device)
        model = build_and_load(lambda: PI0ForConditionalGeneration(cfg), path, dev, resolve_dtype(dtype, dev),
                               rename=checkpoint_to_module_name)
        meta = read_json(path / "norm_stats.json")
        return cls(name, model, load_tokenizer(path), meta, dev)

    def validate(self, obs: Observation) -> None:
        super().validate(obs)
        check_state(obs.state, self.spec.state_dim, required=True)
        seed = obs.options.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise PolicyInputError("options.seed", "seed must be a non-negative integer")

    def text_ids(self, instruction: str) -> list[int]:
        """openpi's prompt cleaning, then BOS + prompt + "\\n", cut to max_token_len."""
        clean = instruction.strip().replace("_", " ").replace("\n", " ")
        ids = [self.tokenizer.bos_token_id, *self.tokenizer(clean + "\n", add_special_tokens=False)["input_ids"]]
        return ids[:MAX_TOKEN_LEN]

    def _prefix(self, observations: list[Observation]) -> dict[str, torch.Tensor]:
        """Right-padded ids with 256 image placeholders per *present* camera; absent slots are zero images
        masked out by pixel_attention_mask."""
        blank = torch.zeros(3, self.image_size, self.image_size)
        pixels, cam_mask, rows = [], [], []
        for obs in observations:
            present = [c in obs.images for c in self.spec.cameras]
            pixels.append(torch.stack([
                normalize(resize_with_pad(obs.images[c], self.image_size), (0.5,) * 3, (0.5,) * 3) if p else blank
                for c, p in zip(self.spec.cameras, present, strict=True)]))
            cam_mask.append(present)
            rows.append([self.image_token_id] * (self.tokens_per_image * sum(present)) + self.text_ids(obs.instruction))
        length = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "pixel_values": torch.stack(pixels).to(self.device, self.dtype),
                "pixel_attention_mask": torch.tensor(cam_mask, device=self.device)}

    def _state(self, observations: list[Observation]) -> torch.Tensor:
        s = self.state_stats
        z = np.stack([(np.asarray(o.state, dtype=np.float64) - s.mean) / (s.std + EPS) for o in observations])
        out = torch.zeros(len(observations), self.cfg.max_state_dim)
        out[:, : z.shape[1]] = torch.from_numpy(z).float()
        return out.to(self.device, self.dtype)

    @torch.inference_mode()
    def predict(self, observations: list[Observation]) -> list[PolicyResult]:
        timings: dict[str, float] = {}
        watch = Stopwatch(self.device)
        seeds = [o.options.get("seed", secrets.randbits(63)) for o in observations]
        noise = row_noise(seeds, self.cfg.chunk_size, self.cfg.max_action_dim).to(self.device, self.dtype)
        inputs = self._prefix(observations)
        state = self._state(observations)
        watch.lap(timings, "preprocess")
        y = sample_actions_timed(self.model, state=state, noise=noise, num_steps=self.cfg.num_inference_steps,
                                 timings=timings, **inputs)
        a = self.action_stats
        actions = y[..., : len(a.mean)].double().cpu().numpy() * (a.std + EPS) + a.mean
        return [PolicyResult(actions=row, action_type=self.spec.action_type, units=list(self.spec.units),
                             timings_ms=timings_copy(timings)) for row in actions]
