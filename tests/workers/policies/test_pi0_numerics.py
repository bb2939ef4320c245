"""pi0 numerics as the references: openpi's resize-with-pad, LeRobot's fp32 islands under bf16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_flow import FP32_NAMES
from workers.policies.preprocess import IMAGE_CONVENTIONS, normalize, normalize_batch, resize_with_pad, to_towers


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


@pytest.mark.parametrize("convention", sorted(IMAGE_CONVENTIONS))
def test_a_pass_brings_its_images_to_the_tower_bitwise_as_image_by_image(convention: str) -> None:
    """to_towers (one normalisation over the stack for openpi's convention) is the per-image path, bit for bit,
    whatever the sizes (resized first, some to the tower's size already)."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((224, 224, 3), (96, 128, 3), (224, 224, 3),
                                                                        (300, 200, 3))]
    alone = torch.stack([IMAGE_CONVENTIONS[convention](img, 224) for img in images])
    assert torch.equal(to_towers(images, 224, convention), alone)
    assert to_towers([], 224, convention).shape == (0, 3, 224, 224)


def test_normalize_batch_is_normalize_bitwise() -> None:
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    norms = [((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), ((0.1, 0.2, 0.3), (0.9, 0.8, 0.7))]
    for pairs in (norms[:1], norms):
        expected = torch.stack([torch.cat([normalize(img, m, s) for m, s in pairs]) for img in images])
        assert torch.equal(normalize_batch(images, pairs), expected)


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


@pytest.mark.parametrize("name", ["pi0-tiny", "pi0-tiny-lerobot"])
def test_fp32_islands_hold_the_checkpoints_values(tiny_dir: Path, name: str) -> None:
    """Issue 25 item 3: the islands are loaded from the checkpoint's fp32 values, bit for bit (built in bf16,
    loaded, then cast back, state_proj was off by up to 7.8e-3)."""
    from workers.policies.checkpoint import iter_tensors
    from workers.policies.pi0_layouts import detect
    from workers.policies.presets import build_tiny_checkpoints

    build_tiny_checkpoints(tiny_dir, [name], overwrite=False)
    half = Pi0Policy.load(name, tiny_dir / name, dtype="bfloat16", device="cpu")
    layout = detect(tiny_dir / name)
    params = dict(half.model.named_parameters())
    checked = 0
    for ckpt_name, value in iter_tensors(tiny_dir / name):
        target = layout.rename(ckpt_name)
        if target in params and any(part in target for part in FP32_NAMES):
            assert value.dtype == torch.float32 and params[target].dtype == torch.float32, target
            assert torch.equal(params[target].detach(), value), f"{target} is not the checkpoint's fp32 value"
            checked += 1
    assert checked > 20 and "embed_action_time.state_proj.weight" in params
