"""Real-format loading: sharded and single-file safetensors, the strict key check, save-then-load."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workers.policies.checkpoint import INDEX_FILE, SINGLE_FILE, save_sharded
from workers.policies.errors import CheckpointError
from workers.policies.openvla.model import module_to_checkpoint_name
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy


def _copy(src: Path, dst: Path, *, weights: bool) -> Path:
    shutil.copytree(src, dst, ignore=None if weights else shutil.ignore_patterns("*.safetensors", INDEX_FILE))
    return dst


def test_openvla_tiny_has_the_real_key_layout(tiny_dir: Path) -> None:
    weight_map = json.loads((tiny_dir / "openvla-tiny" / INDEX_FILE).read_text())["weight_map"]
    names = set(weight_map)
    assert len(set(weight_map.values())) > 1  # really sharded
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in names
    assert not any(n.endswith(".gamma") for n in names)
    for unused in ("vision_backbone.featurizer.norm.weight", "vision_backbone.fused_featurizer.norm.weight",
                   "vision_backbone.fused_featurizer.attn_pool.latent",
                   "vision_backbone.featurizer.blocks.2.ls2.scale_factor"):
        assert unused in names
    assert "language_model.lm_head.weight" in names and "projector.fc3.weight" in names


def test_openvla_save_then_load_single_file(openvla: OpenVLAPolicy, tiny_dir: Path, tmp_path: Path,
                                            make_vla_obs) -> None:
    """Re-saved without the unused keys and as one model.safetensors: same outputs."""
    dst = _copy(tiny_dir / "openvla-tiny", tmp_path / "ovla", weights=False)
    save_sharded({module_to_checkpoint_name(k): v for k, v in openvla.model.state_dict().items()}, dst)
    assert (dst / SINGLE_FILE).is_file()
    again = OpenVLAPolicy.load("again", dst, dtype="float32", device="cpu")
    obs = [make_vla_obs(0), make_vla_obs(1, unnorm_key="fractal20220817_data")]
    for a, b in zip(openvla.predict(obs), again.predict(obs), strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)


def test_pi0_save_then_load_sharded(pi0: Pi0Policy, tiny_dir: Path, tmp_path: Path, make_pi0_obs) -> None:
    dst = _copy(tiny_dir / "pi0-tiny", tmp_path / "pi0", weights=False)
    save_sharded(pi0.model.state_dict(), dst, max_shard_bytes=200_000)
    assert (dst / INDEX_FILE).is_file()
    again = Pi0Policy.load("again", dst, dtype="float32", device="cpu")
    obs = [make_pi0_obs(2, ("base_0_rgb", "left_wrist_0_rgb"), seed=4)]
    np.testing.assert_array_equal(pi0.predict(obs)[0].actions, again.predict(obs)[0].actions)


def _tamper(ckpt: Path, drop: str, add: str) -> None:
    index = json.loads((ckpt / INDEX_FILE).read_text())
    shard = ckpt / index["weight_map"].pop(drop)
    tensors = load_file(str(shard))
    del tensors[drop]
    tensors[add] = torch.zeros(3)
    save_file(tensors, str(shard))
    index["weight_map"][add] = shard.name
    (ckpt / INDEX_FILE).write_text(json.dumps(index))


def test_strict_check_names_missing_and_unexpected(tiny_dir: Path, tmp_path: Path) -> None:
    dst = _copy(tiny_dir / "openvla-tiny", tmp_path / "bad", weights=True)
    _tamper(dst, drop="projector.fc2.bias", add="projector.fc9.bias")
    with pytest.raises(CheckpointError) as err:
        OpenVLAPolicy.load("bad", dst, dtype="float32", device="cpu")
    msg = str(err.value)
    assert "missing keys (1): projector.fc2.bias" in msg
    assert "unexpected keys (1): projector.fc9.bias" in msg


def test_strict_check_reports_shape_mismatch(tiny_dir: Path, tmp_path: Path) -> None:
    dst = _copy(tiny_dir / "pi0-tiny", tmp_path / "shape", weights=True)
    tensors = load_file(str(dst / SINGLE_FILE))
    tensors["action_out_proj.bias"] = torch.zeros(5)
    save_file(tensors, str(dst / SINGLE_FILE))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): action_out_proj.bias \(5,\)"):
        Pi0Policy.load("shape", dst, dtype="float32", device="cpu")


def test_missing_shard_and_missing_weights(tiny_dir: Path, tmp_path: Path) -> None:
    dst = _copy(tiny_dir / "openvla-tiny", tmp_path / "noshard", weights=True)
    next(dst.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard"):
        OpenVLAPolicy.load("x", dst, dtype="float32", device="cpu")
    bare = _copy(tiny_dir / "pi0-tiny", tmp_path / "noweights", weights=False)
    with pytest.raises(CheckpointError, match="no model.safetensors.index.json or model.safetensors"):
        Pi0Policy.load("x", bare, dtype="float32", device="cpu")


def test_missing_dir_and_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        OpenVLAPolicy.load("x", tmp_path / "nope", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Pi0Policy.load("x", tmp_path / "empty", device="cpu")
