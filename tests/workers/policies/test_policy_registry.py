from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workers.policies.errors import CheckpointError, ModelNotFound
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy
from workers.policies.registry import known_models, load_policy, parse_enabled_models


def test_parse_enabled_models() -> None:
    got = parse_enabled_models("openvla-7b=/models/openvla-7b, pi0=/models/pi0,openvla-tiny,pi0-tiny,")
    assert got == {"openvla-7b": Path("/models/openvla-7b"), "pi0": Path("/models/pi0"),
                   "openvla-tiny": None, "pi0-tiny": None}
    assert parse_enabled_models("") == {}
    assert parse_enabled_models("my-finetune=/m/ft") == {"my-finetune": Path("/m/ft")}


@pytest.mark.parametrize("spec", ["openvla-tiny=", "=x", "pi0-tiny,pi0-tiny"])
def test_parse_rejects_malformed(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_enabled_models(spec)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelNotFound) as err:
        parse_enabled_models("openvla-tiny,pi0tiny")
    assert err.value.suggestions[0] == "pi0-tiny"
    assert "did you mean pi0-tiny" in str(err.value)
    with pytest.raises(ModelNotFound) as err:
        load_policy("openvla7b", None, model_dir=Path("/nonexistent"))
    assert "openvla-7b" in err.value.suggestions
    assert set(known_models()) >= {"openvla-7b", "pi0", "openvla-tiny", "pi0-tiny"}


def test_family_comes_from_config(tiny_dir: Path, tmp_path: Path) -> None:
    ft = tmp_path / "my-finetune"
    shutil.copytree(tiny_dir / "pi0-tiny", ft)
    assert isinstance(load_policy("pi0-tiny", None, model_dir=tiny_dir, device="cpu"), Pi0Policy)
    policy = load_policy("my-finetune", ft, model_dir=tmp_path, dtype="float32", device="cpu")
    assert isinstance(policy, Pi0Policy) and policy.spec.name == "my-finetune"


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="openvla-7b.*not found at.*openvla-7b"):
        load_policy("openvla-7b", None, model_dir=tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_policy("pi0", tmp_path / "pi0-weights", model_dir=tmp_path)


def test_unsupported_model_type(tiny_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_dir / "pi0-tiny", other)
    (other / "config.json").write_text(json.dumps({"model_type": "gr00t"}))
    with pytest.raises(CheckpointError, match="gr00t"):
        load_policy("other", other, model_dir=tmp_path)


def test_missing_tiny_is_built_into_model_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = load_policy("openvla-tiny", None, model_dir=tmp_path, dtype="float32", device="cpu")
    assert isinstance(policy, OpenVLAPolicy)
    assert (tmp_path / "openvla-tiny" / "config.json").is_file()
    assert "building it" in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
