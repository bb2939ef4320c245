"""Per-checkpoint OpenVLA options: center crop for augmentation-trained fine-tunes, the prompt chosen by
llm_backbone_id, config.json winning over ENABLED_MODELS options, unknown values refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from workers.policies.errors import CheckpointError, PolicySelfCheckError
from workers.policies.openvla.options import V01_SYSTEM_PROMPT, center_crop, resolve
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.register import register
from workers.policies.registry import load_policy, parse_enabled_models, parse_model_options


def _copy(tiny_dir: Path, tmp_path: Path, options: dict[str, str] | None = None, **config) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_dir / "openvla-tiny", out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(config)
    (out / "config.json").write_text(json.dumps(cfg))
    register(out, options=options)  # another config is another checkpoint, proved by a fingerprint of its own
    return out


def test_enabled_models_options_parse() -> None:
    spec = "libero=/m/x?center_crop=true&crop_scale=0.8, openvla-tiny"
    assert parse_enabled_models(spec) == {"libero": Path("/m/x"), "openvla-tiny": None}
    assert parse_model_options(spec) == {"libero": {"center_crop": "true", "crop_scale": "0.8"}, "openvla-tiny": {}}
    with pytest.raises(ValueError, match="key=value"):
        parse_model_options("a=/p?center_crop")
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_model_options("openvla-tiny?center_crop=true")


def test_prompt_by_backbone() -> None:
    assert resolve({"llm_backbone_id": "llama2-7b-pure"}, {}).prompt.startswith("In: ")
    assert resolve({"llm_backbone_id": "vicuna-v15-7b"}, {}).prompt.startswith(V01_SYSTEM_PROMPT + " USER: ")
    with pytest.raises(CheckpointError, match="mistral-v0.1-7b-pure"):
        resolve({"llm_backbone_id": "mistral-v0.1-7b-pure"}, {})
    with pytest.raises(CheckpointError, match="no llm_backbone_id"):
        resolve({}, {})
    # config.json wins; the option fills what the config does not say
    assert resolve({}, {"llm_backbone_id": "vicuna-v15-7b"}).prompt.endswith("ASSISTANT:")
    assert resolve({"llm_backbone_id": "llama2-7b-pure"}, {"llm_backbone_id": "vicuna-v15-7b"}).prompt.endswith("Out:")
    with pytest.raises(CheckpointError, match="unknown OpenVLA option"):
        resolve({"llm_backbone_id": "llama2-7b-pure"}, {"centre_crop": "1"})


def test_v01_prompt_reaches_the_tokens(tiny_dir: Path, tmp_path: Path, openvla: OpenVLAPolicy) -> None:
    v01 = OpenVLAPolicy.load("v01", _copy(tiny_dir, tmp_path, llm_backbone_id="vicuna-v15-7b"),
                             dtype="float32", device="cpu")
    ids = v01.prompt_ids("Open the drawer")
    text = v01.tokenizer.decode(ids[1:-1]).strip()
    assert text == f"{V01_SYSTEM_PROMPT} USER: What action should the robot take to open the drawer? ASSISTANT:"
    assert ids[-1] == v01.space_id and ids != openvla.prompt_ids("Open the drawer")


def test_center_crop_geometry() -> None:
    """sqrt(0.9) of each side, centred, resized to 224: a centred square marker grows by 1/sqrt(0.9)."""
    img = np.zeros((224, 224, 3), np.uint8)
    img[62:162, 62:162] = 255  # 100 px square
    out = center_crop(img, 0.9)
    assert out.shape == (224, 224, 3)
    row = out[112, :, 0]
    width = int((row > 127).sum())
    assert abs(width - 100 / np.sqrt(0.9)) <= 2
    assert np.array_equal(center_crop(img, 1.0), img)  # the identity box samples every pixel exactly


def test_center_crop_option_changes_pixels(tiny_dir: Path, tmp_path: Path, openvla: OpenVLAPolicy,
                                           make_vla_obs) -> None:
    ckpt = _copy(tiny_dir, tmp_path, options={"center_crop": "true"})
    cropped = load_policy("libero", ckpt, model_dir=tmp_path, dtype="float32", device="cpu",
                          options={"center_crop": "true"})
    assert isinstance(cropped, OpenVLAPolicy) and cropped.options.center_crop
    img = make_vla_obs(0).images["primary"]
    expected = openvla.pixels(center_crop(img, 0.9))
    np.testing.assert_array_equal(cropped.pixels(img).numpy(), expected.numpy())
    # the checkpoint's own config.json wins over the option
    said = _copy(tiny_dir, tmp_path / "said", center_crop=False)
    plain = OpenVLAPolicy.load("plain", said, dtype="float32", device="cpu", options={"center_crop": "true"})
    assert not plain.options.center_crop


def test_registered_outputs_belong_to_their_load_options(tiny_dir: Path, tmp_path: Path) -> None:
    """Outputs registered without center_crop prove nothing about a load with it: the worker says how to register."""
    ckpt = _copy(tiny_dir, tmp_path)
    with pytest.raises(PolicySelfCheckError, match="--option center_crop=true"):
        load_policy("libero", ckpt, model_dir=tmp_path, dtype="float32", device="cpu",
                    options={"center_crop": "true"})
