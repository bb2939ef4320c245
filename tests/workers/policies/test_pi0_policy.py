"""pi0-tiny on transformers' PI0ForConditionalGeneration through our loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError
from workers.policies.pi0 import EPS, Pi0Policy
from workers.policies.pi0_flow import row_noise


def test_spec(pi0: Pi0Policy) -> None:
    spec = pi0.spec
    assert (spec.family, spec.action_dim, spec.chunk_length, spec.state_dim) == ("pi0", 7, 50, 8)
    assert spec.cameras == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert spec.unnorm_keys == [] and spec.default_unnorm_key is None


def test_chunk_shape_and_timings(pi0: Pi0Policy, make_pi0_obs) -> None:
    [res] = pi0.predict([make_pi0_obs(0, seed=1)])
    assert res.actions.shape == (50, 7) and res.actions.dtype == np.float64
    assert np.all(np.isfinite(res.actions))
    assert set(res.timings_ms) == {"preprocess", "vision", "prefill", "flow"}


def test_seed_determinism(pi0: Pi0Policy, make_pi0_obs) -> None:
    a = pi0.predict([make_pi0_obs(0, seed=7)])[0].actions
    b = pi0.predict([make_pi0_obs(0, seed=7)])[0].actions
    c = pi0.predict([make_pi0_obs(0, seed=8)])[0].actions
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_batch_equals_singles(pi0: Pi0Policy, make_pi0_obs) -> None:
    batch = [
        make_pi0_obs(0, ("base_0_rgb",), "pick up the cup", seed=1),
        make_pi0_obs(1, ("base_0_rgb", "left_wrist_0_rgb"), "fold the towel in half then put it in the basket", seed=2),
        make_pi0_obs(2, ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), "open the drawer", seed=3),
    ]
    together = pi0.predict(batch)
    for obs, res in zip(batch, together, strict=True):
        [alone] = pi0.predict([obs])
        np.testing.assert_allclose(res.actions, alone.actions, rtol=1e-5, atol=1e-6)


def test_inputs_matter(pi0: Pi0Policy, make_pi0_obs) -> None:
    base = pi0.predict([make_pi0_obs(0, seed=1)])[0].actions
    other_image = pi0.predict([make_pi0_obs(5, seed=1)])[0].actions
    obs = make_pi0_obs(0, seed=1)
    obs.state = obs.state + 1.0
    other_state = pi0.predict([obs])[0].actions
    assert not np.allclose(base, other_image) and not np.allclose(base, other_state)


def native_inputs(pi0: Pi0Policy, obs: Observation) -> dict[str, torch.Tensor]:
    """transformers' own input form: every camera slot, blank ones zero, and a pixel_attention_mask."""
    blank = torch.zeros(3, pi0.image_size, pi0.image_size)
    present = [c in obs.images for c in pi0.spec.cameras]
    pixels = [pi0.image(obs.images[c]) if p else blank for c, p in zip(pi0.spec.cameras, present, strict=True)]
    ours = pi0._prefix([obs])
    return {"input_ids": ours["input_ids"], "attention_mask": ours["attention_mask"],
            "pixel_values": torch.stack(pixels)[None], "pixel_attention_mask": torch.tensor([present])}


def test_matches_transformers_sample_actions(pi0: Pi0Policy, make_pi0_obs) -> None:
    """Our flow (vision only on present cameras, fp32 islands) equals transformers' sample_actions, which
    runs the tower on every slot, in fp32; x = y[..., :D] * (std + 1e-6) + mean (openpi's epsilon)."""
    obs = make_pi0_obs(1, ("base_0_rgb", "right_wrist_0_rgb"), seed=11)
    noise = row_noise([11], pi0.cfg.chunk_size, pi0.cfg.max_action_dim)
    y = pi0.model.sample_actions(state=pi0._state([obs]), noise=noise, **native_inputs(pi0, obs))
    s = pi0.action_stats
    expected = y[0, :, :7].double().numpy() * (s.std + EPS) + s.mean
    assert EPS == 1e-6
    np.testing.assert_allclose(pi0.predict([obs])[0].actions, expected, rtol=1e-5, atol=1e-7)


def test_state_is_z_scored_and_zero_padded(pi0: Pi0Policy, make_pi0_obs) -> None:
    obs = make_pi0_obs(0)
    obs.state = pi0.state_stats.mean + 2 * pi0.state_stats.std
    z = pi0._state([obs])
    assert z.shape == (1, 32)
    s = pi0.state_stats
    expected = torch.from_numpy(2 * s.std / (s.std + EPS)).float()  # openpi: (x - mean) / (std + 1e-6)
    torch.testing.assert_close(z[0, :8], expected, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(z[0, 8:]) == 0


def test_image_placeholders_per_present_camera(pi0: Pi0Policy, make_pi0_obs) -> None:
    inputs = pi0._prefix([make_pi0_obs(0, ("base_0_rgb", "right_wrist_0_rgb"))])
    # Only the two present cameras reach the vision tower; the empty slot has no placeholders either.
    assert int((inputs["input_ids"] == pi0.image_token_id).sum()) == 2 * 256
    assert inputs["images"].shape == (2, 3, 224, 224)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: setattr(o, "instruction", ""), "instruction"),
        (lambda o: setattr(o, "images", {"left_wrist_0_rgb": o.images["base_0_rgb"]}), "images"),
        (lambda o: setattr(o, "images", {"base_0_rgb": o.images["base_0_rgb"], "top": o.images["base_0_rgb"]}),
         "images"),
        (lambda o: setattr(o, "images", {"base_0_rgb": o.images["base_0_rgb"].astype(np.float64)}),
         "images.base_0_rgb"),
        (lambda o: setattr(o, "images", {"base_0_rgb": np.zeros((4, 4, 4), np.uint8)}), "images.base_0_rgb"),
        (lambda o: setattr(o, "state", None), "state"),
        (lambda o: setattr(o, "state", np.zeros(7)), "state"),
        (lambda o: setattr(o, "state", np.array([np.inf] + [0.0] * 7)), "state"),
        (lambda o: setattr(o, "state", np.array([np.nan] * 8)), "state"),
        (lambda o: o.options.update(seed=-1), "options.seed"),
    ],
)
def test_bad_inputs(pi0: Pi0Policy, make_pi0_obs, mutate, field: str) -> None:
    obs: Observation = make_pi0_obs(0)
    mutate(obs)
    with pytest.raises(PolicyInputError) as err:
        pi0.validate(obs)
    assert err.value.field == field


def test_elongated_image_is_a_bad_input_not_a_failed_batch(pi0, make_pi0_obs) -> None:
    """A 1x1200 image has no rows left once fitted into 224x224: its own request's 4xx, found by validate."""
    obs = make_pi0_obs()
    obs.images["base_0_rgb"] = np.zeros((1, 1200, 3), dtype=np.uint8)
    with pytest.raises(PolicyInputError) as err:
        pi0.validate(obs)
    assert err.value.field == "images.base_0_rgb"
