"""Every pi0 checkpoint layout we load gives LeRobot's actions (issue 13 item 3, proven on the reference).

`vlaapi models build-tiny` writes pi0-tiny (same weights) in each layout users have: transformers-native,
LeRobot (`lerobot/pi0_base` naming, processor statistics), LeRobot v0 (`lerobot/pi0` naming, buffer
statistics) and openpi's PyTorch conversion (assets/<id>/norm_stats.json). Each, loaded through the real
loader in float32, must give the float32 chunks LeRobot 0.6.1 gave on tests/golden/pi0_lerobot06.npz's
224x224 items, within the pi0 golden tolerance (1e-4 absolute on the actions; the layouts differ only in the
normalisation epsilon they carry, 1e-8 or openpi's 1e-6, worth < 1e-5 here). Those are the items where every
layout's image convention is the identity; on the fixture's 480x640 and 300x200 ones the layouts pad as their
checkpoints were trained, each against its own reference in test_pi0_golden.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from tests.golden.helpers import checked_model_dir, require_same_weights, tiny_layout
from tests.golden.test_pi0_golden import ATOL_FP32, observations, square_rows

LAYOUTS = ("pi0-tiny-lerobot", "pi0-tiny-lerobot-v0", "pi0-tiny-openpi")


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture("pi0_lerobot06")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


@pytest.fixture(scope="module")
def native(golden):
    from workers.policies.pi0 import Pi0Policy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return Pi0Policy.load("pi0-tiny", checked_model_dir("pi0-tiny", golden[1]), dtype="float32", device="cpu")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_matches_lerobot(golden, native, layout: str) -> None:
    from workers.policies.pi0 import Pi0Policy

    policy = Pi0Policy.load(layout, tiny_layout(layout), dtype="float32", device="cpu")
    require_same_weights(policy, native, layout)
    arrays, _, _ = golden
    rows = square_rows(golden)
    results = policy.predict([observations(golden)[n] for n in rows])
    for n, res in zip(rows, results, strict=True):
        np.testing.assert_allclose(res.actions, arrays["actions"][n], atol=ATOL_FP32, rtol=0,
                                   err_msg=f"{layout} item {n}")
