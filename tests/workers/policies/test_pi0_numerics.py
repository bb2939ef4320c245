"""pi0 numerics as the references: openpi's resize-with-pad, LeRobot's fp32 islands under bf16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_flow import FP32_NAMES
from workers.policies.preprocess import resize_with_pad


def test_resize_with_pad_is_openpis() -> None:
    """Bilinear, sides truncated (int, not round), black bars at the truncated half-offset."""
    img = np.random.default_rng(0).integers(0, 256, (100, 500, 3), dtype=np.uint8)
    out = resize_with_pad(img, 224)
    ratio = 500 / 224
    nh = int(100 / ratio)  # 44 (rounding would give 45)
    top = int((224 - nh) / 2)
    assert nh == 44 and out.shape == (224, 224, 3)
    expected = np.asarray(Image.fromarray(img).resize((224, nh), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[top : top + nh], expected)
    assert not out[:top].any() and not out[top + nh :].any()
    bicubic = np.asarray(Image.fromarray(img).resize((224, nh), Image.Resampling.BICUBIC))
    assert not np.array_equal(expected, bicubic)
    square = np.zeros((224, 224, 3), np.uint8)
    assert resize_with_pad(square, 224) is square


def test_fp32_islands_under_bf16(tiny_dir: Path, pi0: Pi0Policy, make_pi0_obs) -> None:
    half = Pi0Policy.load("pi0-tiny", tiny_dir / "pi0-tiny", dtype="bfloat16", device="cpu")
    assert half.spec.dtype == "bfloat16"
    for name, p in half.model.named_parameters():
        island = any(part in name for part in FP32_NAMES)
        assert p.dtype == (torch.float32 if island else torch.bfloat16), name
    obs = make_pi0_obs(1, ("base_0_rgb", "left_wrist_0_rgb"), seed=5)
    got, ref = half.predict([obs])[0].actions, pi0.predict([obs])[0].actions
    s = pi0.action_stats
    z = np.abs((got - ref) / s.std)  # in normalised units
    assert np.all(np.isfinite(got)) and z.mean() < 0.1
