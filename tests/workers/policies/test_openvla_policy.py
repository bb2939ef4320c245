"""OpenVLA-tiny through the real loader: batching, determinism, prompt layout and input validation."""
from __future__ import annotations

import numpy as np
import pytest

from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError, UnknownUnnormKey
from workers.policies.openvla.policy import OpenVLAPolicy


def test_spec(openvla: OpenVLAPolicy) -> None:
    spec = openvla.spec
    assert (spec.family, spec.action_dim, spec.chunk_length, spec.cameras) == ("openvla", 7, 1, ["primary"])
    assert spec.unnorm_keys == ["bridge_orig", "fractal20220817_data"]
    assert spec.default_unnorm_key == "bridge_orig"
    assert spec.units[-1] == "gripper_open_fraction" and spec.dtype == "float32" and spec.device == "cpu"
    assert spec.to_dict()["name"] == "openvla-tiny"


def test_prompt_layout(openvla: OpenVLAPolicy) -> None:
    ids = openvla.prompt_ids("Pick Up the RED block")
    tok = openvla.tokenizer
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == openvla.space_id == tok.convert_tokens_to_ids("\u2581")
    text = tok.decode(ids[1:-1])
    assert text.strip() == "In: What action should the robot take to pick up the red block?\nOut:"


def test_predict_shape_and_ranges(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    [res] = openvla.predict([make_vla_obs(0, unnorm_key="fractal20220817_data")])
    assert res.actions.shape == (1, 7) and res.actions.dtype == np.float64
    assert res.unnorm_key == "fractal20220817_data" and res.action_type == "ee_delta"
    stats = openvla.stats["fractal20220817_data"]
    masked = res.actions[0, :6]
    assert np.all(masked > stats.q01[:6]) and np.all(masked < stats.q99[:6])
    assert -1 < res.actions[0, 6] < 1  # unmasked gripper stays in bin-centre space
    assert set(res.timings_ms) == {"preprocess", "vision", "prefill", "decode"}


def test_actions_lie_on_bin_centres(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    [res] = openvla.predict([make_vla_obs(3)])
    stats = openvla.stats["bridge_orig"]
    a_norm = (res.actions[0, :6] - stats.q01[:6]) / (0.5 * (stats.q99[:6] - stats.q01[:6])) - 1
    centres = openvla.action_tokenizer.bin_centers
    assert np.all(np.min(np.abs(a_norm[:, None] - centres[None, :]), axis=1) < 1e-9)


def test_greedy_is_deterministic(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    a = openvla.predict([make_vla_obs(1)])[0].actions
    b = openvla.predict([make_vla_obs(1)])[0].actions
    np.testing.assert_array_equal(a, b)


def test_batch_equals_singles(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    batch = [
        make_vla_obs(0, "pick up the red block"),
        make_vla_obs(1, "put the spoon on the towel near the sink then close the drawer slowly",
                     unnorm_key="fractal20220817_data"),
        make_vla_obs(2, "open the drawer", unnorm_key="bridge_orig"),
        make_vla_obs(4, "wipe the table carefully with the green sponge", unnorm_key="fractal20220817_data"),
    ]
    assert len({len(openvla.prompt_ids(o.instruction)) for o in batch}) >= 3
    together = openvla.predict(batch)
    for obs, res in zip(batch, together, strict=True):
        [alone] = openvla.predict([obs])
        np.testing.assert_allclose(res.actions, alone.actions, rtol=0, atol=1e-9)
        assert res.unnorm_key == alone.unnorm_key
    assert not np.allclose(together[0].actions, together[2].actions)  # rows really differ


def test_image_changes_actions(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    # The patches must reach the LLM (upstream generate() on transformers 5 silently drops them).
    outs = {tuple(openvla.predict([make_vla_obs(s)])[0].actions[0]) for s in range(4)}
    assert len(outs) > 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: setattr(o, "instruction", "   "), "instruction"),
        (lambda o: setattr(o, "images", {}), "images"),
        (lambda o: setattr(o, "images", {"primary": o.images["primary"], "wrist": o.images["primary"]}), "images"),
        (lambda o: setattr(o, "images", {"primary": o.images["primary"].astype(np.float32)}), "images.primary"),
        (lambda o: setattr(o, "images", {"primary": o.images["primary"][..., :2]}), "images.primary"),
        (lambda o: setattr(o, "images", {"primary": o.images["primary"][..., 0]}), "images.primary"),
        (lambda o: setattr(o, "state", np.array([0.0, np.nan])), "state"),
    ],
)
def test_bad_inputs(openvla: OpenVLAPolicy, make_vla_obs, mutate, field: str) -> None:
    obs: Observation = make_vla_obs(0)
    mutate(obs)
    with pytest.raises(PolicyInputError) as err:
        openvla.validate(obs)
    assert err.value.field == field


def test_unknown_unnorm_key_lists_valid_keys(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    with pytest.raises(UnknownUnnormKey) as err:
        openvla.validate(make_vla_obs(0, unnorm_key="bridge"))
    assert err.value.valid == ["bridge_orig", "fractal20220817_data"]
    assert "fractal20220817_data" in err.value.message


def test_batch_pixels_are_bitwise_the_per_image_reference(openvla: OpenVLAPolicy, make_image) -> None:
    """The serving path normalises a whole batch at once (uint8 upload, three tensor operations); each
    image must come out bit for bit as the per-image reference arithmetic ((x / 255 - mean) / std per
    tower) that the golden tests pin to the upstream processor."""
    import torch

    from workers.policies.preprocess import normalize, resize_naive

    images = [make_image(seed, 96, 64) for seed in range(3)]
    batch = openvla.pixel_batch(images, torch.device("cpu"))
    assert batch.shape == (3, 6, openvla.image_size, openvla.image_size) and batch.dtype == torch.float32
    for img, got in zip(images, batch, strict=True):
        resized = resize_naive(img, openvla.image_size)
        expected = torch.cat([normalize(resized, mean, std) for mean, std in openvla.pixel_norms])
        assert torch.equal(got, expected)
