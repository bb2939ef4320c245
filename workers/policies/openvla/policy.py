"""OpenVLAPolicy: validate one observation, predict a batch in one prefill + 6 cached decode steps."""
from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.policies.base import Observation, Policy, PolicyResult, PolicySpec
from workers.policies.checkpoint import read_json, require_dir
from workers.policies.common import EE_DELTA_UNITS, build_and_load, check_state, load_tokenizer, timings_copy
from workers.policies.devices import dtype_name, resolve_device, resolve_dtype
from workers.policies.errors import CheckpointError
from workers.policies.openvla.action_tokenizer import ActionStats, ActionTokenizer, select_unnorm_key
from workers.policies.openvla.config import OpenVLAConfig
from workers.policies.openvla.decode import greedy_decode, splice_inputs
from workers.policies.openvla.model import OpenVLAModel, checkpoint_to_module_name, unused_checkpoint_key
from workers.policies.openvla.options import OpenVLAOptions, center_crop, resolve
from workers.policies.openvla.static_decode import StaticDecodePool, bucket_for
from workers.policies.preprocess import normalize_batch, resize_naive
from workers.policies.selfcheck import check_openvla
from workers.policies.timing import Stopwatch

log = logging.getLogger(__name__)
CAMERA = "primary"


class OpenVLAPolicy(Policy):
    def __init__(self, name: str, cfg: OpenVLAConfig, model: OpenVLAModel, tokenizer: Any, device: torch.device,
                 options: OpenVLAOptions | None = None):
        self.cfg, self.model, self.tokenizer, self.device = cfg, model, tokenizer, device
        self.options = options or resolve(cfg.raw, {})
        # The serving decode: static KV cache per batch bucket (CUDA graphs on CUDA); greedy_decode's dynamic
        # cache stays the reference and serves batches above the largest bucket.
        self.static = StaticDecodePool(model)
        self.dtype = next(model.parameters()).dtype
        self.stats = {k: ActionStats.from_norm_stats(v, k) for k, v in cfg.norm_stats.items()}
        self.action_tokenizer = ActionTokenizer(cfg.base_vocab_size, cfg.n_action_bins)
        self.space_id = _word_boundary_id(tokenizer)
        towers = (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer)
        self.pixel_norms = [(t.pretrained_cfg["mean"], t.pretrained_cfg["std"]) for t in towers]
        if len(set(cfg.image_sizes)) != 1:  # both towers see the same pixels, stacked along the channels
            raise CheckpointError(f"vision towers with different image sizes are not supported: {cfg.image_sizes}")
        self.image_size = cfg.image_sizes[0]
        default = cfg.raw.get("default_unnorm_key") or (next(iter(self.stats)) if len(self.stats) == 1 else None)
        dim = self.stats[default].action_dim if default else next(iter(self.stats.values())).action_dim
        self.spec = PolicySpec(
            name=name, family="openvla", action_dim=dim, chunk_length=1, cameras=[CAMERA],
            unnorm_keys=sorted(self.stats), default_unnorm_key=default, action_type="ee_delta",
            units=EE_DELTA_UNITS if dim == 7 else ["unspecified"] * dim, state_dim=None,
            dtype=dtype_name(self.dtype), device=str(device), request_options=["unnorm_key"],
        )

    @classmethod
    def load(cls, name: str, path: Path, *, dtype: str = "auto", device: str = "auto",
             options: Mapping[str, Any] | None = None) -> OpenVLAPolicy:
        path = require_dir(path)
        cfg = OpenVLAConfig.from_dir(path)
        opts = resolve(cfg.raw, options or {})  # before the weights: a bad option fails fast
        if (path / "dataset_statistics.json").is_file():
            # deploy.py replaces norm_stats with a fine-tune's dataset_statistics.json; so do we.
            cfg.norm_stats = read_json(path / "dataset_statistics.json")
        dev = resolve_device(device)
        depths = {"featurizer": 0, "fused_featurizer": 0}

        def factory() -> OpenVLAModel:
            model = OpenVLAModel(cfg)
            depths.update(featurizer=model.vision_backbone.featurizer.full_depth,
                          fused_featurizer=model.vision_backbone.fused_featurizer.full_depth)
            return model

        ignorable = _LazyIgnorable(depths)
        model = build_and_load(factory, path, dev, resolve_dtype(dtype, dev),
                               rename=checkpoint_to_module_name, ignorable=ignorable)
        return cls(name, cfg, model, load_tokenizer(path), dev, opts)

    def unnorm_key(self, obs: Observation) -> str:
        return select_unnorm_key(self.cfg.norm_stats, obs.options.get("unnorm_key") or self.spec.default_unnorm_key)

    def validate(self, obs: Observation) -> None:
        super().validate(obs)
        self.unnorm_key(obs)
        check_state(obs.state, None, required=False)  # OpenVLA ignores state, but garbage is still a bad request

    def prompt_ids(self, instruction: str) -> list[int]:
        """BOS + prompt, then the bare word-boundary piece (29871 for Llama-2) if the text did not end with it.

        Remembered per instruction: a control loop or a replay sends the same instruction at every step,
        and the tokenizer call costs about as much CPU as the rest of the request's preparation."""
        return list(self._prompt_ids(instruction))

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (one policy per process, kept for its lifetime)
    def _prompt_ids(self, instruction: str) -> tuple[int, ...]:
        text = self.options.prompt.format(instruction.lower())
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if not ids or ids[0] != bos:
            ids.insert(0, bos)
        if ids[-1] != self.space_id:
            ids.append(self.space_id)
        return tuple(ids)

    def pixels(self, img: np.ndarray) -> torch.Tensor:
        """6 channels: the same image normalised for DINOv2 (0-2) and for SigLIP (3-5), center-cropped
        first for augmentation-trained fine-tunes. On the CPU; the serving path is `pixel_batch`."""
        return self.pixel_batch([img], torch.device("cpu"))[0]

    def pixel_batch(self, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """(B, 6, S, S) float32 on `device`. Crop and resize stay on the host, in PIL, because PIL's
        fixed-point bicubic is what the reference feeds the model (torch's differs by a unit in some
        pixels); the normalisation runs over the whole batch on the device, uploaded as uint8."""
        if self.options.center_crop:
            images = [center_crop(img, self.options.crop_scale) for img in images]
        return normalize_batch([resize_naive(img, self.image_size) for img in images], self.pixel_norms, device)

    @torch.inference_mode()
    def decode_tokens(self, observations: list[Observation], timings: dict[str, float] | None = None) -> torch.Tensor:
        """The serving path up to the action token ids: (B, n_steps), n_steps = the widest row's action_dim."""
        watch = Stopwatch(self.device)
        keys = [self.unnorm_key(o) for o in observations]
        rows = [self.prompt_ids(o.instruction) for o in observations]
        pixels = self.pixel_batch([o.images[CAMERA] for o in observations], self.device).to(self.dtype)
        watch.lap(timings, "preprocess")
        patches = self.model.encode_images(pixels)
        watch.lap(timings, "vision")
        embeds, mask, positions = splice_inputs(self.model, patches, rows)
        n_steps = max(self.stats[k].action_dim for k in keys)
        if bucket_for(len(observations)) is None:
            return greedy_decode(self.model, embeds, mask, positions, n_steps, self._allowed_ids(), timings)
        return self.static.decode(embeds, mask, positions, n_steps, self._allowed_ids(), timings)

    @torch.inference_mode()
    def predict(self, observations: list[Observation]) -> list[PolicyResult]:
        timings: dict[str, float] = {}
        keys = [self.unnorm_key(o) for o in observations]
        tokens = self.decode_tokens(observations, timings)
        return self._results(tokens.cpu().numpy(), keys, timings)

    def self_check(self) -> None:
        """Raise PolicySelfCheckError unless cached (batched and single) decode equals a full recompute."""
        check_openvla(self)

    def _allowed_ids(self) -> tuple[int, int]:
        # We restrict the argmax to the n_action_bins action ids (upstream does not). An unrestricted
        # argmax that lands on a text id decodes to the extreme bin (+0.996, i.e. q99 after
        # un-normalising) and would be sent to a robot as a confident full-scale move; restricted, we
        # return the model's most likely *action* instead. For a well-trained checkpoint the two agree
        # (vLLM's port asserts ids in this range for the same reason).
        first = self.action_tokenizer.first_action_id
        return first, first + self.cfg.n_action_bins

    def _results(self, tokens: np.ndarray, keys: list[str], timings: dict[str, float]) -> list[PolicyResult]:
        out = []
        for row, key in zip(tokens, keys, strict=True):
            stats = self.stats[key]
            actions = stats.unnormalize(self.action_tokenizer.decode(row[: stats.action_dim]))
            units = EE_DELTA_UNITS if stats.action_dim == 7 else ["unspecified"] * stats.action_dim
            out.append(PolicyResult(actions=actions[None, :].astype(np.float64), action_type="ee_delta",
                                    units=list(units), timings_ms=timings_copy(timings), unnorm_key=key))
        return out


class _LazyIgnorable:
    """The unused-key rule needs the towers' full depths, which are known only once the model is built."""

    def __init__(self, depths: dict[str, int]):
        self.depths = depths

    def __call__(self, name: str) -> bool:
        return unused_checkpoint_key(self.depths)(name)


def _word_boundary_id(tokenizer: Any) -> int:
    token_id = tokenizer.convert_tokens_to_ids("\u2581")
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise CheckpointError("tokenizer has no bare word-boundary piece '\u2581' (29871 in Llama-2)")
    return int(token_id)
