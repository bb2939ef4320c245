"""Per-checkpoint OpenVLA options: read from the checkpoint's config.json where it says, else from the
ENABLED_MODELS options (`name=path?center_crop=true`), else the defaults of the published openvla-7b.

- center_crop: fine-tunes trained with random-crop augmentation (the LIBERO ones) expect, at inference, a
  center crop of `crop_scale` of the *area* resized back to 224x224 (openvla experiments/robot/openvla_utils.py).
- llm_backbone_id chooses the prompt: "llama2-*-pure" the plain "In: ...\\nOut:" prompt, "vicuna-v15-*" (the
  OpenVLA v0.1 checkpoints) the Vicuna system prompt with USER/ASSISTANT; anything else is refused, since a
  wrong prompt still decodes to well-formed, wrong actions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.policies.errors import CheckpointError

PURE_PROMPT = "In: What action should the robot take to {}?\nOut:"
V01_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                     "The assistant gives helpful, detailed, and polite answers to the user's questions.")
V01_PROMPT = V01_SYSTEM_PROMPT + " USER: What action should the robot take to {}? ASSISTANT:"
KNOWN = ("center_crop", "crop_scale", "llm_backbone_id")
CROP_OUT = 224  # upstream's crop_and_resize always returns 224 x 224


@dataclass(frozen=True)
class OpenVLAOptions:
    prompt: str
    center_crop: bool = False
    crop_scale: float = 0.9


def prompt_for(backbone: str) -> str:
    if backbone.startswith("llama2-") and backbone.endswith("-pure"):
        return PURE_PROMPT
    if backbone.startswith("vicuna-v15-"):
        return V01_PROMPT
    raise CheckpointError(f"llm_backbone_id {backbone!r} has no known OpenVLA prompt; known: 'llama2-*-pure' "
                          "(openvla-7b and its fine-tunes), 'vicuna-v15-*' (openvla-v01)")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise CheckpointError(f"option {name}={value!r} is not a boolean")


def resolve(config: Mapping[str, Any], options: Mapping[str, Any]) -> OpenVLAOptions:
    """The checkpoint's config.json wins over ENABLED_MODELS options; unknown option names are refused."""
    unknown = sorted(set(options) - set(KNOWN))
    if unknown:
        raise CheckpointError(f"unknown OpenVLA option(s) {unknown}; known: {list(KNOWN)}")
    merged = {**options, **{k: config[k] for k in KNOWN if config.get(k) not in (None, "")}}
    if "llm_backbone_id" not in merged:
        raise CheckpointError("config.json has no llm_backbone_id and no llm_backbone_id option was given: "
                              "the prompt cannot be chosen")
    try:
        scale = float(merged.get("crop_scale", 0.9))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"crop_scale={merged['crop_scale']!r} is not a number") from exc
    if not 0.0 < scale <= 1.0:
        raise CheckpointError(f"crop_scale={scale} must be in (0, 1]")
    return OpenVLAOptions(prompt=prompt_for(str(merged["llm_backbone_id"])),
                          center_crop=_bool("center_crop", merged.get("center_crop", False)), crop_scale=scale)


def center_crop(img: np.ndarray, crop_scale: float) -> np.ndarray:
    """Upstream's center crop, written after TF's image ops in float32: uint8 * (1/255), crop_and_resize
    (bilinear, box of side sqrt(crop_scale) centred, sampled at y1*(H-1) + i*(y2-y1)*(H-1)/(224-1)), then
    back to uint8 as convert_image_dtype(saturate=True) does: trunc(clip(x * 255.5, 0, 255))."""
    x = img.astype(np.float32) * np.float32(1.0 / 255)
    side = np.float32(np.clip(np.sqrt(np.float32(crop_scale)), 0, 1))
    lo = (np.float32(1) - side) / np.float32(2)
    hi = lo + side
    rows = _coords(lo, hi, img.shape[0])
    cols = _coords(lo, hi, img.shape[1])
    out = _bilinear(x, rows, cols)
    return np.clip(out * np.float32(255.5), 0, 255).astype(np.uint8)


def _coords(lo: np.float32, hi: np.float32, size: int) -> np.ndarray:
    scale = (hi - lo) * np.float32(size - 1) / np.float32(CROP_OUT - 1)
    return lo * np.float32(size - 1) + np.arange(CROP_OUT, dtype=np.float32) * scale


def _bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    fy, fx = np.floor(ys), np.floor(xs)
    y0, x0 = fy.astype(np.int64), fx.astype(np.int64)
    y1, x1 = np.ceil(ys).astype(np.int64), np.ceil(xs).astype(np.int64)
    wy, wx = (ys - fy)[:, None, None], (xs - fx)[None, :, None]
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * wx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * wx
    return (top + (bottom - top) * wy).astype(np.float32)
