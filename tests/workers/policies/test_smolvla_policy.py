"""SmolVLA on smolvla-tiny through the real loader: the architecture's facts (layer skipping, self/cross layers,
LeRobot's names), batching, inputs that reach the actions, bad inputs and bad checkpoints, half precision."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from workers.policies.base import Observation
from workers.policies.errors import CheckpointError, PolicyInputError
from workers.policies.loading import family_of, load_checkpoint
from workers.policies.registry import known_models
from workers.policies.smolvla.layout import VLM_DIR
from workers.policies.smolvla.policy import SmolVLAPolicy
from workers.policies.smolvla.tiny import ARCH, CAMERAS


@pytest.fixture(scope="module")
def smolvla(tiny_dir: Path) -> SmolVLAPolicy:
    return SmolVLAPolicy.load("smolvla-tiny", tiny_dir / "smolvla-tiny", dtype="float32", device="cpu")


def image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def obs(seed: int = 0, cams: tuple[str, ...] = ("camera1",), instruction: str = "pick up the cup",
        size: tuple[int, int] = (240, 320), **options) -> Observation:
    return Observation(images={c: image(seed + i, *size) for i, c in enumerate(cams)}, instruction=instruction,
                       state=np.linspace(-1.0, 1.0, 8) + seed, options={"seed": 5, **options})


def _names(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def test_checkpoint_is_lerobots_layout(tiny_dir: Path, smolvla: SmolVLAPolicy) -> None:
    """Only num_vlm_layers text layers are stored (layer skipping); the expert has no embeddings; its
    cross-attention layers project from the VLM's key/value width, its self-attention layers from its own."""
    names = _names(tiny_dir / "smolvla-tiny")
    text = json.loads((tiny_dir / "smolvla-tiny" / VLM_DIR / "config.json").read_text())["text_config"]
    layers = {int(n.split(".")[6]) for n in names if n.startswith("model.vlm_with_expert.vlm.model.text_model.layers.")}
    assert layers == set(range(ARCH.num_vlm_layers)) and text["num_hidden_layers"] > ARCH.num_vlm_layers
    assert not any("lm_expert.embed_tokens" in n for n in names)
    kv_width = text["num_key_value_heads"] * text["head_dim"]
    expert_width = int(text["hidden_size"] * ARCH.expert_width_multiplier)
    for i in range(ARCH.num_vlm_layers):
        shape = names[f"model.vlm_with_expert.lm_expert.layers.{i}.self_attn.k_proj.weight"]
        assert shape[1] == (expert_width if i % ARCH.self_attn_every_n_layers == 0 else kv_width), i
    for head in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"):
        assert f"model.{head}.weight" in names
    assert smolvla.spec.cameras == list(CAMERAS) and smolvla.spec.family == "smolvla"
    assert (smolvla.spec.chunk_length, smolvla.spec.action_dim, smolvla.spec.state_dim) == (50, 7, 8)


def test_registry_knows_smolvla(tiny_dir: Path) -> None:
    assert family_of({"type": "smolvla"}) == "smolvla"
    assert {"smolvla", "smolvla-tiny"} <= set(known_models())
    policy = load_checkpoint("smolvla-tiny", tiny_dir / "smolvla-tiny", dtype="float32", device="cpu")
    assert isinstance(policy, SmolVLAPolicy)  # fingerprint digests, self-check and registered outputs passed


def test_batch_equals_singles_across_cameras_sizes_and_prompts(smolvla: SmolVLAPolicy) -> None:
    batch = [obs(0, ("camera1",), size=(480, 640)), obs(1, ("camera1", "camera3"), "open the drawer", (224, 224)),
             obs(2, CAMERAS, "put the red block on the plate then close the drawer", (300, 200))]
    together = smolvla.predict(batch)
    for o, res in zip(batch, together, strict=True):
        alone = smolvla.predict([o])[0].actions
        np.testing.assert_allclose(res.actions, alone, rtol=1e-5, atol=1e-6)
        assert res.actions.shape == (50, 7) and np.all(np.isfinite(res.actions))


def test_cached_prefix_equals_recomputed(smolvla: SmolVLAPolicy) -> None:
    o = obs(3, ("camera1", "camera2"))
    np.testing.assert_allclose(smolvla.predict([o])[0].actions,
                               smolvla.predict([o], recompute_prefix=True)[0].actions, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("change", ["image", "instruction", "state", "seed", "second camera"])
def test_every_input_reaches_the_actions(smolvla: SmolVLAPolicy, change: str) -> None:
    base = obs(4, ("camera1",))
    other = obs(4, ("camera1",))
    if change == "image":
        other.images["camera1"] = image(99, 240, 320)
    elif change == "instruction":
        other.instruction = "push the blue cube"
    elif change == "state":
        other.state = base.state + 0.5
    elif change == "seed":
        other.options["seed"] = 6
    else:
        other.images["camera2"] = image(98, 240, 320)
    a, b = (smolvla.predict([o])[0].actions for o in (base, other))
    assert np.abs(a - b).max() > 1e-4, change


def test_same_seed_same_actions(smolvla: SmolVLAPolicy) -> None:
    np.testing.assert_array_equal(smolvla.predict([obs(7)])[0].actions, smolvla.predict([obs(7)])[0].actions)


def test_prompt_gets_lerobots_newline(smolvla: SmolVLAPolicy) -> None:
    assert smolvla.text_ids("pick up the cup") == smolvla.text_ids("pick up the cup\n")
    assert len(smolvla.text_ids("pick " * 200)) == ARCH.tokenizer_max_length


@pytest.mark.parametrize("bad,field", [
    (lambda o: setattr(o, "state", None), "state"),
    (lambda o: setattr(o, "state", np.zeros(5)), "state"),
    (lambda o: setattr(o, "state", np.full(8, np.nan)), "state"),
    (lambda o: o.images.update(base_0_rgb=o.images["camera1"]), "images"),
    (lambda o: o.images.update(camera2=o.images.pop("camera1")), "images"),
    (lambda o: o.images.update(camera1=np.zeros((10, 10), dtype=np.uint8)), "images.camera1"),
    (lambda o: o.options.update(seed=-1), "options.seed"),
    (lambda o: o.images.update(camera1=np.zeros((1, 1200, 3), dtype=np.uint8)), "images.camera1"),
    (lambda o: setattr(o, "instruction", "  "), "instruction"),
])
def test_bad_inputs_are_named(smolvla: SmolVLAPolicy, bad, field: str) -> None:
    o = obs()
    bad(o)
    with pytest.raises(PolicyInputError) as err:
        smolvla.validate(o)
    assert err.value.field == field


def _copy(tiny_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "smolvla-copy"
    shutil.copytree(tiny_dir / "smolvla-tiny", dst)
    return dst


def test_missing_vlm_folder_says_what_to_copy(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    shutil.rmtree(ckpt / VLM_DIR)
    with pytest.raises(CheckpointError, match="SmolVLM2-500M-Video-Instruct"):
        SmolVLAPolicy.load("x", ckpt, dtype="float32", device="cpu")


@pytest.mark.parametrize("field,value", [("add_image_special_tokens", True), ("empty_cameras", 2),
                                         ("attention_mode", "diagonal"), ("resize_imgs_with_padding", [512, 384])])
def test_unsupported_config_is_refused(tiny_dir: Path, tmp_path: Path, field: str, value) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[field] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=field.split("_")[0]):
        SmolVLAPolicy.load("x", ckpt, dtype="float32", device="cpu")


def test_unknown_option_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="center_crop"):
        SmolVLAPolicy.load("x", tiny_dir / "smolvla-tiny", dtype="float32", device="cpu", options={"center_crop": "1"})


def test_bf16_keeps_the_expert_in_fp32_with_the_checkpoints_values(tiny_dir: Path, smolvla: SmolVLAPolicy) -> None:
    half = SmolVLAPolicy.load("smolvla-tiny", tiny_dir / "smolvla-tiny", dtype="bfloat16", device="cpu")
    full = smolvla.model.state_dict()
    for name, value in half.model.state_dict().items():
        if name.startswith("vlm_with_expert.vlm."):
            assert value.dtype == torch.bfloat16, name
        else:
            assert value.dtype == torch.float32 and torch.equal(value, full[name]), name
    o = obs(8, ("camera1", "camera2"))
    drift = np.abs(half.predict([o])[0].actions - smolvla.predict([o])[0].actions) / half.action_stats.std
    assert 0 < drift.max() < 0.1  # bf16 rounding, not a broken path (the golden test bounds it tightly)
    half.self_check()


def test_untied_or_absent_lm_head_loads_the_same(tiny_dir: Path, tmp_path: Path, smolvla: SmolVLAPolicy) -> None:
    """The VLM's language-model head is never run; a checkpoint that leaves it out (tied to the embeddings,
    safetensors keeps one name) serves the same actions."""
    from safetensors.torch import load_file, save_file

    ckpt = _copy(tiny_dir, tmp_path)
    tensors = load_file(str(ckpt / "model.safetensors"))
    del tensors["model.vlm_with_expert.vlm.lm_head.weight"]
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    other = SmolVLAPolicy.load("x", ckpt, dtype="float32", device="cpu")
    np.testing.assert_array_equal(other.predict([obs(9)])[0].actions, smolvla.predict([obs(9)])[0].actions)


def test_a_missing_used_tensor_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ckpt = _copy(tiny_dir, tmp_path)
    tensors = load_file(str(ckpt / "model.safetensors"))
    del tensors["model.vlm_with_expert.lm_expert.layers.0.mlp.down_proj.weight"]
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_expert.layers.0.mlp.down_proj.weight"):
        SmolVLAPolicy.load("x", ckpt, dtype="float32", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_serves_close_to_fp32(tiny_dir: Path, smolvla: SmolVLAPolicy) -> None:
    """MODEL_DTYPE=auto on CUDA: the VLM in bf16, the expert fp32; loads through the registry (self-check and
    registered outputs at twice the tolerance), a mixed batch equals its singles and stays near the fp32 CPU
    chunk in normalised units."""
    from workers.policies.registry import load_policy

    cuda = load_policy("smolvla-tiny", None, model_dir=tiny_dir, dtype="auto", device="cuda")
    assert cuda.spec.dtype == "bfloat16" and cuda.spec.device.startswith("cuda")
    batch = [obs(0, ("camera1",), size=(480, 640)), obs(1, CAMERAS, "open the drawer", (224, 224))]
    for o, res in zip(batch, cuda.predict(batch), strict=True):
        std = cuda.action_stats.std
        assert (np.abs(res.actions - cuda.predict([o])[0].actions) / std).max() <= 0.1
        assert (np.abs(res.actions - smolvla.predict([o])[0].actions) / std).max() <= 0.1


def test_fewer_expert_layers_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_expert_layers"] = 2
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_expert_layers=2"):
        SmolVLAPolicy.load("x", ckpt, dtype="float32", device="cpu")
