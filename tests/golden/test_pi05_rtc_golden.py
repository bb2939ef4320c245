"""Real-time chunking on pi0.5 against LeRobot 0.6.1's RTC module driving its PI05Policy
(tests/golden/pi05_rtc_lerobot06.npz, ops/golden/pi05_rtc.py): pi05-tiny, images of 224x224, 480x640 and
300x200, the previous chunk's leftover as LeRobot's action queue holds it, four prefix schedules.

Tolerances as the pi0 RTC golden (tests/golden/test_pi0_rtc_golden.py, whose case helpers this reuses): the
prefix normalisation 1e-5; float32 actions 1e-4 absolute in robot units, unguided and guided (identity and
VJP); over the frozen `inference_delay` steps our gap to the executing actions at most the reference's plus
that tolerance, and the reference's below half the unguided gap.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from tests.golden.helpers import checked_model_dir, tiny_layout
from tests.golden.test_pi0_rtc_golden import observation, prev_actions, rtc_options

ATOL_FP32 = 1e-4


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture("pi05_rtc_lerobot06")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


@pytest.fixture(scope="module")
def policy(golden):
    from workers.policies.pi05.policy import Pi05Policy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tiny_layout("pi05-tiny")
    return Pi05Policy.load("pi05-tiny", checked_model_dir("pi05-tiny", golden[1]), dtype="float32", device="cpu")


def cases(golden) -> range:
    return range(len(golden[0]["case_item"]))


def test_cases_cover_non_square_images(golden) -> None:
    arrays, _, images = golden
    sizes = {images[int(n) * 3].shape[:2] for n in arrays["case_item"]}
    assert {(224, 224), (480, 640), (300, 200)} <= sizes


def test_prefix_normalisation(golden, policy) -> None:
    """Robot units -> the quantile space: the exact inverse of our un-normalisation, and LeRobot's."""
    arrays = golden[0]
    for c in cases(golden):
        n, z = int(arrays["case_prev_len"][c]), policy.normalize_actions(prev_actions(arrays, c))
        np.testing.assert_allclose(policy.normalize_actions(policy.unnormalize(z)), z, atol=1e-12, rtol=0)
        np.testing.assert_allclose(z, arrays["prev_chunk"][c, :n], atol=1e-5, rtol=1e-6, err_msg=f"case {c}")


@pytest.mark.parametrize(("jacobian", "key"), [(None, "plain"), ("identity", "rtc"), ("vjp", "vjp")])
def test_chunk_matches_lerobot(golden, policy, jacobian, key) -> None:
    arrays = golden[0]
    for c in cases(golden):
        rtc = None if key == "plain" else rtc_options(arrays, c, jacobian)
        [res] = policy.predict([observation(golden, c, rtc)])
        np.testing.assert_allclose(res.actions, arrays[f"{key}_actions"][c], atol=ATOL_FP32, rtol=0,
                                   err_msg=f"case {c} ({arrays['case_schedule'][c]})")


@pytest.mark.parametrize(("jacobian", "key"), [("identity", "rtc"), ("vjp", "vjp")])
def test_new_chunk_follows_the_executing_one_as_the_reference_does(golden, policy, jacobian, key) -> None:
    arrays = golden[0]
    for c in cases(golden):
        delay, prev = int(arrays["case_delay"][c]), prev_actions(arrays, c)
        [res] = policy.predict([observation(golden, c, rtc_options(arrays, c, jacobian))])
        ours = float(np.abs(res.actions[:delay] - prev[:delay]).max())
        ref = float(np.abs(arrays[f"{key}_actions"][c][:delay] - prev[:delay]).max())
        plain = float(np.abs(arrays["plain_actions"][c][:delay] - prev[:delay]).max())
        assert ours <= ref + ATOL_FP32, f"case {c}: ours {ours:.3g} vs LeRobot {ref:.3g}"
        assert ref < plain / 2, f"case {c}: guidance did not pull the reference in ({ref:.3g} vs {plain:.3g})"
