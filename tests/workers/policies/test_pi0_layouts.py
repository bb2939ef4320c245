"""Every pi0 layout loads through the same loader and gives the native layout's actions for the same weights."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

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
    batch = [make_pi0_obs(0, ("base_0_rgb",), seed=1),
             make_pi0_obs(2, ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), "open the drawer", seed=2)]
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

    from workers.policies.pi0_layouts import PALIGEMMA_VOCAB, _sizes

    cfg = PI0Config(**_sizes({}, "gemma_2b", "gemma_300m"))
    assert cfg.vlm_config.text_config.hidden_size == 2048 and cfg.dit_config.hidden_size == 1024
    assert cfg.dit_config.vocab_size == cfg.vlm_config.text_config.vocab_size == PALIGEMMA_VOCAB
    assert cfg.vlm_config.vision_config.num_hidden_layers == 27
    with pytest.raises(CheckpointError, match="gemma_7b"):
        _sizes({}, "gemma_7b", "gemma_300m")
