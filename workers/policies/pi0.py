"""pi0 on transformers' native PI0ForConditionalGeneration modules, loaded through our strict loader from any
of the layouts in pi0_layouts (transformers-native, LeRobot, openpi's PyTorch conversion).

Native statistics live in norm_stats.json in openpi's layout ({"norm_stats": {"state": {mean, std},
"actions": {mean, std}}}); optional top-level "cameras", "action_type" and "units" there describe the robot
(a transformers checkpoint has no place for them). pi0 normalises with z-scores (pi0.5/FAST use quantiles;
not this class), with the epsilon and inverse of the layout's own reference (openpi 1e-6 both ways;
LeRobot 1e-8 forward, none on the inverse).
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PI0Config, PI0ForConditionalGeneration

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
from workers.policies.pi0_flow import keep_fp32_islands, row_noise, sample_actions
from workers.policies.pi0_graph import FlowGraphPool
from workers.policies.pi0_layouts import OPENPI_EPS, Layout, detect
from workers.policies.preprocess import check_fits, to_towers
from workers.policies.selfcheck import check_pi0
from workers.policies.timing import Stopwatch

OPENPI_CAMERAS = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
EPS = OPENPI_EPS  # the native layout's epsilon (openpi's)
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
    def __init__(self, name: str, model: PI0ForConditionalGeneration, tokenizer: Any, meta: dict[str, Any],
                 device: torch.device, *, eps: float = EPS, inverse_eps: bool = True, layout: str = "native",
                 image_convention: str = "openpi"):
        self.flow = FlowGraphPool(model)  # on CUDA the Euler loop replays a captured graph per shape
        stats = meta.get("norm_stats", meta)
        self.state_stats, self.action_stats = Stats(stats["state"], "state"), Stats(stats["actions"], "actions")
        self.eps, self.inverse_eps = eps, inverse_eps
        cfg = model.config
        if len(self.action_stats.mean) > cfg.max_action_dim or len(self.state_stats.mean) > cfg.max_state_dim:
            raise CheckpointError("norm_stats are wider than the model's max_action_dim/max_state_dim")
        self.setup(name, "pi0", model, tokenizer, device, layout, image_convention, meta, len(self.state_stats.mean))

    def setup(self, name: str, family: str, model: torch.nn.Module, tokenizer: Any, device: torch.device,
              layout: str, image_convention: str, meta: dict[str, Any], state_dim: int | None) -> None:
        """What pi0 and pi0.5 share once their statistics are read: the model, the tower's geometry, the spec
        (openpi's cameras unless the checkpoint names its own, units, the seed option)."""
        self.model, self.tokenizer, self.device, self.layout = model, tokenizer, device, layout
        self.image_convention = image_convention
        self.cfg: PI0Config = model.config
        self.dtype = model.model.dit.layers[0].self_attn.q_proj.weight.dtype  # the stream, not an fp32 island
        self.image_token_id = int(self.cfg.vlm_config.image_token_id)
        self.image_size = int(self.cfg.vlm_config.vision_config.image_size)
        self.tokens_per_image = (self.image_size // int(self.cfg.vlm_config.vision_config.patch_size)) ** 2
        dim = len(self.action_stats.mean)
        self.spec = PolicySpec(
            name=name, family=family, action_dim=dim, chunk_length=int(self.cfg.chunk_size),
            cameras=list(meta.get("cameras") or OPENPI_CAMERAS), unnorm_keys=[], default_unnorm_key=None,
            action_type=meta.get("action_type", "robot_specific"),
            units=list(meta.get("units", EE_DELTA_UNITS if dim == 7 else ["unspecified"] * dim)),
            state_dim=state_dim, dtype=dtype_name(self.dtype), device=str(device),
            request_options=["seed", "rtc"], real_time_chunking=True,
        )

    @classmethod
    def load(cls, name: str, path: Path, *, dtype: str = "auto", device: str = "auto",
             options: Mapping[str, str] | None = None) -> Pi0Policy:
        path = require_dir(path)
        unknown = sorted(set(options or {}) - {"asset_id"})
        if unknown:
            raise CheckpointError(f"unknown pi0 option(s) {unknown}; known: ['asset_id'] (openpi layout)")
        layout = detect(path, asset_id=(options or {}).get("asset_id"))
        cfg = _config(path, layout)
        cfg._attn_implementation = "sdpa"  # flash-attn would drop the bidirectional mask (see transformers)
        dev = resolve_device(device)
        model = build_and_load(lambda: PI0ForConditionalGeneration(cfg), path, dev, resolve_dtype(dtype, dev),
                               rename=layout.rename, ignorable=layout.ignorable, before_load=keep_fp32_islands)
        return cls(name, model, load_tokenizer(path), layout.stats, dev, eps=layout.eps,
                   inverse_eps=layout.inverse_eps, layout=layout.name, image_convention=layout.image_convention)

    def validate(self, obs: Observation) -> None:
        super().validate(obs)
        check_state(obs.state, self.spec.state_dim, required=self.spec.state_dim is not None)
        check_seed(obs.options)
        for cam, img in obs.images.items():
            check_fits(f"images.{cam}", img, self.image_size)
        flow_sampling.parse(obs.options, self.spec.action_dim, self.spec.chunk_length)

    def text_ids(self, instruction: str) -> list[int]:
        """openpi's prompt cleaning, then BOS + prompt + "\\n", cut to max_token_len."""
        return self.bos_tokens(clean_prompt(instruction) + "\n", MAX_TOKEN_LEN)

    def bos_tokens(self, text: str, limit: int) -> list[int]:
        """BOS + the text's tokens, cut to `limit` (PaliGemma's tokenizer adds BOS itself; ours are told to)."""
        return [self.tokenizer.bos_token_id, *self.tokenizer(text, add_special_tokens=False)["input_ids"]][:limit]

    def prompt_ids(self, obs: Observation) -> list[int]:
        """The text part of a row's prefix (pi0: the instruction alone; pi0.5 adds the discretised state)."""
        return self.text_ids(obs.instruction)

    def image(self, img: np.ndarray) -> torch.Tensor:
        """To the tower's size in [-1, 1] with black bars, as the checkpoint's layout was trained: openpi's
        centred resize-with-pad (PIL bilinear), LeRobot >= 0.4's centred torch port of it, or LeRobot <= 0.3's
        top-left padding (torch bilinear). The path a pass takes (preprocess.to_towers), so the golden tests that
        compare this with the references check what serves."""
        return to_towers([img], self.image_size, self.image_convention)[0]

    def _prefix(self, observations: list[Observation]) -> dict[str, torch.Tensor]:
        """Right-padded ids with 256 image placeholders per *present* camera, and only the present cameras'
        images (row-major): an empty slot is neither embedded nor attended to."""
        images, rows = [], []
        for obs in observations:
            present = [c for c in self.spec.cameras if c in obs.images]
            images += [obs.images[c] for c in present]
            rows.append((self.tokens_per_image * len(present), self.prompt_ids(obs)))
        length = max(n + len(text) for n, text in rows)
        # Filled by slices, not built from Python lists of every placeholder id (~0.7 ms per tensor at a batch of 8)
        ids = np.full((len(rows), length), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, (n, text) in enumerate(rows):
            ids[i, :n] = self.image_token_id
            ids[i, n:n + len(text)] = text
            mask[i, :n + len(text)] = 1
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        stacked = to_towers(images, self.image_size, self.image_convention)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "images": stacked.to(self.device)}

    def _state(self, observations: list[Observation]) -> torch.Tensor:
        s = self.state_stats
        states = [o.state for o in observations]
        return zscore_padded(states, s.mean, s.std, self.eps, self.cfg.max_state_dim).to(self.device)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        a = self.action_stats
        return y[..., : len(a.mean)] * (a.std + (self.eps if self.inverse_eps else 0.0)) + a.mean

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Robot units -> the model's space: the exact inverse of `unnormalize` (RTC's executing actions)."""
        a = self.action_stats
        return (actions - a.mean) / (a.std + (self.eps if self.inverse_eps else 0.0))

    @torch.no_grad()  # sample_actions picks inference_mode unless RTC needs autograd
    def predict(self, observations: list[Observation], *, recompute_prefix: bool = False) -> list[PolicyResult]:
        timings: dict[str, float] = {}
        watch = Stopwatch(self.device)
        seeds = [o.options.get("seed", secrets.randbits(63)) for o in observations]
        noise = row_noise(seeds, self.cfg.chunk_size, self.cfg.max_action_dim).to(self.device)
        inputs = self._prefix(observations)
        guidance = flow_sampling.batch_guidance(observations, self.spec.action_dim, self.spec.chunk_length,
                                                self.normalize_actions, self.cfg.max_action_dim, self.device)
        watch.lap(timings, "preprocess")
        y = self._flow(observations, inputs, noise, timings, recompute_prefix, guidance)
        actions = self.unnormalize(y.double().cpu().numpy())
        return [PolicyResult(actions=row, action_type=self.spec.action_type, units=list(self.spec.units),
                             timings_ms=timings_copy(timings)) for row in actions]

    def _flow(self, observations: list[Observation], inputs: dict[str, torch.Tensor], noise: torch.Tensor,
              timings: dict[str, float], recompute_prefix: bool,
              guidance: flow_sampling.Guidance | None) -> torch.Tensor:
        """The normalised chunk: pi0's flow, conditioned on the state projected into the suffix."""
        return sample_actions(self.model, state=self._state(observations), noise=noise,
                              num_steps=self.cfg.num_inference_steps, timings=timings,
                              recompute_prefix=recompute_prefix, flow=self.flow.integrate, guidance=guidance,
                              **inputs)

    def self_check(self) -> None:
        """Raise PolicySelfCheckError unless a batch equals its singles and the cached flow equals a flow
        that recomputes the prefix at every step."""
        check_pi0(self)


def clean_prompt(instruction: str) -> str:
    """openpi's prompt cleaning: stripped, "_" and newlines as spaces."""
    return instruction.strip().replace("_", " ").replace("\n", " ")


def _config(path: Path, layout: Layout) -> PI0Config:
    try:
        if layout.name == "native":
            return PI0Config.from_json_file(str(path / "config.json"))
        return PI0Config(**layout.config)
    except Exception as exc:  # @strict config validation raises several types
        raise CheckpointError(f"{str(path / 'config.json')!r} does not give a valid PI0Config: {exc}") from exc
