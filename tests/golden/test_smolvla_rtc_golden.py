"""Real-time chunking on SmolVLA against LeRobot 0.6.1's RTC module driving its SmolVLA
(tests/golden/smolvla_rtc_lerobot06.npz, ops/golden/smolvla_lerobot.py RTC_CASES): smolvla-tiny, the SmolVLA
fixture's images (480x640, 224x224, 300x200, 512x512), state and noise; the previous chunk's leftover as
LeRobot's action queue holds it, given to us in robot units as the service returned them.

Two guidance modes, each against its reference (as tests/golden/test_pi0_rtc_golden.py for pi0): `identity`
is LeRobot 0.6.1 as shipped (J = I), `vjp` (the default, the paper's) the same RTCProcessor with the velocity
differentiated. Tolerances: float32, 1e-4 absolute on robot-unit actions; over the frozen delay our gap to the
executing actions is at most the reference's plus that tolerance, and below the unguided chunk's gap.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from ops.golden.smolvla_lerobot import CAMERAS, RTC_FIXTURE
from tests.golden.helpers import case_observation, checked_model_dir, tiny_layout
from workers.policies.base import Observation
from workers.policies.pi0_flow import row_noise

ATOL_FP32 = 1e-4


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture(RTC_FIXTURE)
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


@pytest.fixture(scope="module")
def policy(golden):
    from workers.policies.smolvla.policy import SmolVLAPolicy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tiny_layout("smolvla-tiny")
    path = checked_model_dir("smolvla-tiny", golden[1])
    return SmolVLAPolicy.load("smolvla-tiny", path, dtype="float32", device="cpu")


def prev_actions(arrays, c: int) -> np.ndarray:
    return arrays["prev_actions"][c, : int(arrays["case_prev_len"][c])].astype(np.float64)


def rtc_options(arrays, c: int, jacobian: str) -> dict:
    return {"prev_actions": prev_actions(arrays, c).tolist(), "inference_delay": int(arrays["case_delay"][c]),
            "execution_horizon": int(arrays["case_horizon"][c]),
            "max_guidance_weight": float(arrays["case_weight"][c]),
            "prefix_attention_schedule": str(arrays["case_schedule"][c]), "jacobian": jacobian}


def observation(golden, c: int, rtc: dict | None) -> Observation:
    return case_observation(golden, CAMERAS, c, rtc)


def cases(golden) -> range:
    return range(len(golden[0]["case_item"]))


def test_noise_and_prefix_normalisation(golden, policy) -> None:
    arrays = golden[0]
    np.testing.assert_array_equal(row_noise([int(s) for s in arrays["case_seed_b"]], 50, 32).numpy(),
                                  arrays["case_noise_b"])
    for c in cases(golden):
        n, z = int(arrays["case_prev_len"][c]), policy.normalize_actions(prev_actions(arrays, c))
        np.testing.assert_allclose(z, arrays["prev_chunk"][c, :n], atol=1e-5, rtol=1e-6, err_msg=f"case {c}")


def test_unguided_chunk_matches(golden, policy) -> None:
    arrays = golden[0]
    for c in cases(golden):
        [res] = policy.predict([observation(golden, c, None)])
        np.testing.assert_allclose(res.actions, arrays["plain_actions"][c], atol=ATOL_FP32, rtol=0, err_msg=f"case {c}")


@pytest.mark.parametrize(("jacobian", "key"), [("identity", "rtc"), ("vjp", "vjp")])
def test_guided_chunk_matches_lerobot(golden, policy, jacobian, key) -> None:
    arrays = golden[0]
    for c in cases(golden):
        [res] = policy.predict([observation(golden, c, rtc_options(arrays, c, jacobian))])
        np.testing.assert_allclose(res.actions, arrays[f"{key}_actions"][c], atol=ATOL_FP32, rtol=0,
                                   err_msg=f"case {c} ({jacobian})")
        delay, prefix = int(arrays["case_delay"][c]), prev_actions(arrays, c)
        ours = float(np.abs(res.actions[:delay] - prefix[:delay]).max())
        theirs = float(np.abs(arrays[f"{key}_actions"][c][:delay] - prefix[:delay]).max())
        plain = float(np.abs(arrays["plain_actions"][c][:delay] - prefix[:delay]).max())
        assert ours <= theirs + ATOL_FP32 and theirs < plain, (c, jacobian, ours, theirs, plain)
