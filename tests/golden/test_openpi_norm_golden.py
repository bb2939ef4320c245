"""pi0's state normalisation and action un-normalisation against openpi's own transforms
(tests/golden/openpi_norm.npz: `Normalize` -> `PadStatesAndActions(32)`, `Unnormalize` -> [:, :D], z-score
with openpi's epsilon 1e-6 both ways), for the layouts that follow openpi: transformers-native and openpi's
PyTorch conversion. (LeRobot layouts follow LeRobot's processor, 1e-8 and no epsilon in the inverse; the
LeRobot fixtures cover them.)

Tolerances: normalised state 1e-6 absolute (ours is float32 on the model side; 1e-8 instead of 1e-6 would
be off by up to 4.8e-5 here); un-normalised actions 1e-12 (both float64).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from tests.golden.helpers import checked_model_dir, tiny_layout
from workers.policies.base import Observation


@pytest.fixture(scope="module")
def golden():
    return load_fixture("openpi_norm")


@pytest.fixture(scope="module", params=["pi0-tiny", "pi0-tiny-openpi"])
def policy(request, golden):
    from workers.policies.pi0 import Pi0Policy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    native = request.param == "pi0-tiny"
    path = checked_model_dir("pi0-tiny", golden[1]) if native else tiny_layout(request.param)
    return Pi0Policy.load(request.param, path, dtype="float32", device="cpu")


def test_state_normalisation_matches_openpi(golden, policy) -> None:
    arrays, _ = golden
    observations = [Observation(images={}, instruction="x", state=s) for s in arrays["state"]]
    ours = policy._state(observations).cpu().numpy()
    np.testing.assert_allclose(ours, arrays["state_normalized"], atol=1e-6, rtol=0)


def test_action_unnormalisation_matches_openpi(golden, policy) -> None:
    arrays, _ = golden
    np.testing.assert_allclose(policy.unnormalize(arrays["y"]), arrays["actions"], atol=1e-12, rtol=0)
