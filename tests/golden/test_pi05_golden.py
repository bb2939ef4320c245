"""pi05-tiny against LeRobot 0.6.1's `PI05Policy` (tests/golden/pi05_lerobot06.npz): the same weights, the
same images (224x224, 480x640 and 300x200, through LeRobot's own resize), states (one beyond q99, one below
q01), fixed noise, its preprocessor (quantiles, the state discretised into the prompt, tokenizer) and
postprocessor.

Tolerances: prompt ids exact; tower inputs 1e-6 (torch's resize rounds by thread count); float32 actions
1e-4 absolute in robot units (measured 2.4e-7), a batch giving each row what it gives alone; bfloat16:
LeRobot's dtype map exactly (its fp32 islands), and each item's drift from the float32 reference at most
1.5x LeRobot's own bf16 drift on that item, on the normalised chunk (measured: ours 7.6e-3 to 9.3e-3,
0.21x to 0.75x of LeRobot's 1.0e-2 to 3.6e-2).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from tests.golden.helpers import checked_model_dir, fixture_observations, tiny_layout
from workers.policies.base import Observation
from workers.policies.pi0_flow import row_noise

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
ATOL_FP32 = 1e-4
BF16_DRIFT_FACTOR = 1.5


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture("pi05_lerobot06")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


def _load(meta, dtype: str):
    from workers.policies.pi05.policy import Pi05Policy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tiny_layout("pi05-tiny")
    return Pi05Policy.load("pi05-tiny", checked_model_dir("pi05-tiny", meta), dtype=dtype, device="cpu")


@pytest.fixture(scope="module")
def policy(golden):
    return _load(golden[1], "float32")


def observations(golden) -> list[Observation]:
    return fixture_observations(golden, CAMERAS)


def test_fixture_covers_non_square_images_and_out_of_range_states(golden) -> None:
    arrays, meta, images = golden
    assert {img.shape[:2] for img in images} >= {(224, 224), (480, 640), (300, 200)}
    prompts = " ".join(meta["prompts"])
    assert " 255" in prompts and " -1" in prompts  # a state beyond q99 and one below q01


def test_noise_is_the_fixtures(golden) -> None:
    arrays, _, _ = golden
    np.testing.assert_array_equal(row_noise([int(s) for s in arrays["seeds"]], 50, 32).numpy(), arrays["noise"])


def test_prompt_ids_match(golden, policy) -> None:
    """Instruction cleaning, quantile-normalised state in 256 bins, the prompt template, BOS: token for token."""
    _, meta, _ = golden
    for n, obs in enumerate(observations(golden)):
        assert policy.prompt_ids(obs) == meta["prompt_ids"][n], (policy.prompt_text(obs), meta["prompts"][n])


def test_tower_inputs_match_lerobots_resize(golden, policy) -> None:
    arrays, _, _ = golden
    obs = observations(golden)
    for i, row in enumerate(arrays["tower_rows"]):
        img = next(iter(obs[int(row)].images.values()))
        assert img.shape[:2] != (224, 224)
        # torch's bilinear kernel rounds by thread count (0 at 2+ threads, 3.6e-7 at 1, as LeRobot's own would)
        np.testing.assert_allclose(policy.image(img).numpy(), arrays["tower_inputs"][i], atol=1e-6, rtol=0)


def test_actions_match_lerobot_singles(golden, policy) -> None:
    arrays, _, _ = golden
    for n, obs in enumerate(observations(golden)):
        [res] = policy.predict([obs])
        np.testing.assert_allclose(res.actions, arrays["actions"][n], atol=ATOL_FP32, rtol=0, err_msg=f"item {n}")


def test_batch_matches_lerobot_batch(golden, policy) -> None:
    arrays, _, _ = golden
    obs = observations(golden)
    rows = [int(r) for r in arrays["batch_rows"]]
    results = policy.predict([obs[r] for r in rows])
    for i, res in enumerate(results):
        np.testing.assert_allclose(res.actions, arrays["batch_actions"][i], atol=ATOL_FP32, rtol=0)
        np.testing.assert_allclose(arrays["batch_actions"][i], arrays["actions"][rows[i]], atol=ATOL_FP32, rtol=0)


@pytest.fixture(scope="module")
def bf16(golden):
    return _load(golden[1], "bfloat16")


def test_bf16_keeps_lerobots_fp32_weights(golden, bf16) -> None:
    from workers.policies.pi05.layouts import to_native

    _, meta, _ = golden
    ours = {k: str(v.dtype).replace("torch.", "") for k, v in bf16.model.state_dict().items()}
    want = {to_native(k): v for k, v in meta["shipped_param_dtypes"].items() if "gemma_expert.lm_head" not in k}
    differ = {k: (ours.get(k), v) for k, v in want.items() if ours.get(k) != v}
    assert not differ, f"(ours, LeRobot) dtype differs for {len(differ)} weights, e.g. {sorted(differ.items())[:5]}"


def test_bf16_drift_within_the_reference(golden, bf16) -> None:
    arrays, _, _ = golden
    for n, obs in enumerate(observations(golden)):
        [res] = bf16.predict([obs])
        bound = BF16_DRIFT_FACTOR * float(np.abs(arrays["shipped_chunk"][n] - arrays["chunk"][n]).max())
        drift = float(np.abs(bf16.action_stats.normalize(res.actions) - arrays["chunk"][n]).max())
        assert drift <= bound, f"item {n}: bf16 drift {drift:.3g} > {bound:.3g}"


def test_openpi_epsilon_bins_edge_states_one_lower(golden, policy) -> None:
    """Item 0's state lands exactly on two bin edges (normalised 0.0 and 0.75): LeRobot (range as is) bins them
    as the fixture says; openpi's layout (range + 1e-6, as openpi normalises) one bin lower, every other value
    the same. So the two references themselves disagree there, and each layout follows its own."""
    from workers.policies.pi05.policy import Pi05Policy

    arrays, meta, _ = golden
    openpi = Pi05Policy.load("pi05-tiny-openpi", tiny_layout("pi05-tiny-openpi"), dtype="float32", device="cpu")
    for n, state in enumerate(arrays["state"]):
        ours, theirs = policy.state_bins(state), openpi.state_bins(state)
        s = policy.state_stats
        z = 2 * (state - s.q01) / (s.q99 - s.q01) - 1
        # an inner edge (at +-1 the shift changes nothing: -1 stays -1, and 1 is past the last edge anyway)
        on_edge = np.isclose((z + 1) * 128, np.rint((z + 1) * 128), atol=1e-4, rtol=0) & (np.abs(z) < 1 - 1e-6)
        assert (theirs == np.where(on_edge, ours - 1, ours)).all(), (n, ours, theirs)
    assert np.count_nonzero(policy.state_bins(arrays["state"][0]) != openpi.state_bins(arrays["state"][0])) == 2
