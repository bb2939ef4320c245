"""Every pi0 layout loads through the same loader and gives the native layout's actions for the same weights."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.workers.policies.conftest import image
from workers.policies.base import Observation
from workers.policies.errors import CheckpointError
from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_layouts import LEROBOT_EPS
from workers.policies.presets import build_tiny_checkpoints
from workers.policies.registry import load_policy

LAYOUTS = {"pi0-tiny-lerobot": "lerobot", "pi0-tiny-lerobot-v0": "lerobot", "pi0-tiny-openpi": "openpi"}


@pytest.fixture(scope="module")
def layout_dir(tiny_dir: Path) -> Path:
    build_tiny_checkpoints(tiny_dir, tuple(LAYOUTS), overwrite=False)
    return tiny_dir


def _load(root: Path, name: str) -> Pi0Policy:
    policy = load_policy(name, None, model_dir=root, dtype="float32", device="cpu", self_check=False)
    assert isinstance(policy, Pi0Policy)
    return policy


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_gives_native_actions(name: str, layout_dir: Path, pi0: Pi0Policy, make_pi0_obs) -> None:
    policy = _load(layout_dir, name)
    assert policy.layout == LAYOUTS[name]
    # Sizes come from the checkpoint, not PI0Config's defaults (a LeRobot config.json is no PI0Config).
    assert policy.cfg.dit_config.hidden_size == pi0.cfg.dit_config.hidden_size
    assert policy.spec.cameras == pi0.spec.cameras and policy.spec.state_dim == pi0.spec.state_dim
    # The expert's embedding is saved with the VLM's vocabulary on every transformers version.
    assert policy.cfg.dit_config.vocab_size == policy.cfg.vlm_config.text_config.vocab_size
    # Square images: the layouts' image conventions (centred or top-left padding) agree only there, and this
    # test is about the weights and statistics; test_image_convention_at_480x640 is about the padding.
    batch = [_square(make_pi0_obs(0, ("base_0_rgb",), seed=1)),
             _square(make_pi0_obs(2, ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), "open the drawer",
                                  seed=2))]
    ours, native = policy.predict(batch), pi0.predict(batch)
    for a, b in zip(ours, native, strict=True):
        if policy.layout == "openpi":  # same statistics file format and epsilon: identical
            np.testing.assert_array_equal(a.actions, b.actions)
        else:  # LeRobot: float32 statistics, eps 1e-8 on the state, inverse y * std + mean (no epsilon);
            # those differences move the state input and the scale by ~1e-6 relative, no more.
            scale = np.abs(b.actions).max()
            np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=1e-5 * scale)
            assert not np.array_equal(a.actions, b.actions)  # the LeRobot statistics were really used
    if policy.layout == "lerobot":
        assert (policy.eps, policy.inverse_eps) == (LEROBOT_EPS, False)


def _square(obs: Observation) -> Observation:
    obs.images = {c: image(100 + i, 224, 224) for i, c in enumerate(obs.images)}
    return obs


def lerobot_03_pixels(img: np.ndarray, size: int = 224) -> torch.Tensor:
    """LeRobot 0.3.3 modeling_pi0: `resize_with_pad(img, *resize_imgs_with_padding, pad_value=0)` on the float
    [0, 1] image (F.interpolate bilinear, align_corners=False; F.pad(img, (pad_w, 0, pad_h, 0))), then
    `img * 2.0 - 1.0`. Written here from its source, apart from the service's version."""
    x = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0) / 255.0
    cur_h, cur_w = x.shape[2:]
    ratio = max(cur_w / size, cur_h / size)
    rh, rw = int(cur_h / ratio), int(cur_w / ratio)
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    x = F.pad(x, (max(0, int(size - rw)), 0, max(0, int(size - rh)), 0), value=0)
    return (x * 2.0 - 1.0)[0]


@pytest.fixture(scope="module")
def openpi_480x640() -> tuple[np.ndarray, np.ndarray]:
    """openpi-client's own resize_with_pad of a 480x640 image (tests/golden/openpi_images.npz)."""
    from ops.golden.fixture import load_fixture
    from ops.golden.inputs import regenerate_images

    arrays, _ = load_fixture("openpi_images")
    images = regenerate_images(arrays["input_specs"], arrays["input_digests"])
    i = next(i for i, img in enumerate(images) if img.shape[:2] == (480, 640))
    return images[i], arrays[f"resized_{i}"]


@pytest.mark.parametrize("name", ["pi0-tiny", *sorted(LAYOUTS)])
def test_image_convention_at_480x640(name: str, layout_dir: Path, openpi_480x640) -> None:
    """Each layout pads as its checkpoint was trained: openpi centred (PIL), LeRobot >= 0.4 centred (openpi's
    torch port, float bilinear without antialias), LeRobot 0.3 (resize_imgs_with_padding, buffer statistics)
    top-left. At 480x640 top-left and centred are far apart. (tests/golden/test_pi0_golden.py compares both
    LeRobot layouts with the tower inputs LeRobot 0.3.3 and 0.6.1 themselves produced.)"""
    img, openpi_resized = openpi_480x640
    policy = _load(layout_dir, name)
    got = policy.image(img)
    centred = (torch.from_numpy(openpi_resized).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    top_left = lerobot_03_pixels(img)
    if name == "pi0-tiny-lerobot-v0":
        assert policy.image_convention == "lerobot-0.3"
        torch.testing.assert_close(got, top_left, rtol=0, atol=1e-6)
        assert bool((got[:, :56] == -1).all()) and not bool((got[:, -56:] == -1).all())  # 168 rows, bottom
    elif name == "pi0-tiny-lerobot":
        assert policy.image_convention == "lerobot-torch"
        bars = torch.cat([got[:, :28], got[:, -28:]], dim=1)  # 168 rows in the middle, 28 black above and below
        assert bool((bars == -1).all()) and not bool((got[:, 28:56] == -1).all())
        assert 0.0 < float((got - centred).abs().max()) < 1.0  # openpi's placement, not its PIL kernel
    else:
        assert policy.image_convention == "openpi"
        torch.testing.assert_close(got, centred, rtol=0, atol=0)
    assert float((centred - top_left).abs().max()) > 1.0  # the conventions really differ here


def test_image_convention_comes_from_the_config(layout_dir: Path, tmp_path: Path) -> None:
    """A LeRobot checkpoint with processor files but 0.3's resize_imgs_with_padding field pads top-left."""
    ckpt = tmp_path / "lerobot-03-config"
    shutil.copytree(layout_dir / "pi0-tiny-lerobot", ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["resize_imgs_with_padding"] = cfg.pop("image_resolution")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert Pi0Policy.load("x", ckpt, dtype="float32", device="cpu").image_convention == "lerobot-0.3"


def test_unknown_layout_names_what_was_found(layout_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(layout_dir / "pi0-tiny-openpi", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.pop("paligemma_variant")
    cfg["type"] = "pi0_fast"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        Pi0Policy.load("bad", bad, dtype="float32", device="cpu")
    msg = str(err.value)
    assert "'pi0_fast'" in msg and "paligemma_with_expert." in msg and "openpi" in msg


def test_openpi_needs_one_asset(layout_dir: Path, tmp_path: Path) -> None:
    two = tmp_path / "two"
    shutil.copytree(layout_dir / "pi0-tiny-openpi", two)
    shutil.copytree(two / "assets" / "tiny_robot", two / "assets" / "other_robot")
    with pytest.raises(CheckpointError, match="exactly one assets"):
        Pi0Policy.load("two", two, dtype="float32", device="cpu")


def test_lerobot_without_statistics_is_refused(layout_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(layout_dir / "pi0-tiny-lerobot", bare)
    for f in bare.glob("policy_*processor*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="observation.state"):
        Pi0Policy.load("bare", bare, dtype="float32", device="cpu")


def test_real_variant_sizes() -> None:
    """LeRobot/openpi name variants; the sizes are theirs, the expert vocabulary the VLM's (257152)."""
    from transformers import PI0Config

    from workers.policies.pi0_layouts import PALIGEMMA_VOCAB, model_sizes

    cfg = PI0Config(**model_sizes({}, "gemma_2b", "gemma_300m"))
    assert cfg.vlm_config.text_config.hidden_size == 2048 and cfg.dit_config.hidden_size == 1024
    assert cfg.dit_config.vocab_size == cfg.vlm_config.text_config.vocab_size == PALIGEMMA_VOCAB
    assert cfg.vlm_config.vision_config.num_hidden_layers == 27
    with pytest.raises(CheckpointError, match="gemma_7b"):
        model_sizes({}, "gemma_7b", "gemma_300m")
