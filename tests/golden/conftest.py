"""Golden fixtures: reference implementations' outputs on our tiny checkpoints (see ops/golden/).

The tests read only the committed .npz files and the tiny checkpoints that tests/conftest.py builds
into .data/test-models; each fixture records the digest of the weights it was made on, and a mismatch
fails at once with what to do, rather than as a numeric difference.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from tests.golden.helpers import checked_model_dir


@pytest.fixture(scope="session")
def golden_openvla() -> tuple[dict[str, np.ndarray], dict[str, Any], list[np.ndarray]]:
    arrays, meta = load_fixture("openvla")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


@pytest.fixture(scope="session")
def golden_openvla_policy(golden_openvla):
    from workers.policies.openvla.policy import OpenVLAPolicy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    path = checked_model_dir("openvla-tiny", golden_openvla[1])
    return OpenVLAPolicy.load("openvla-tiny", path, dtype="float32", device="cpu")
