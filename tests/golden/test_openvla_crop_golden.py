"""OpenVLA's eval-time center crop (augmentation-trained fine-tunes, e.g. LIBERO) against upstream's own
TensorFlow code (tests/golden/openvla_center_crop.npz: openvla_utils.py `crop_and_resize`, crop_scale 0.9,
via get_vla_action's center_crop branch, tensorflow 2.15) on the OpenVLA fixture's images.

Tolerance: exact (uint8 equal): ours is written after TF's ops in float32 and the result is re-quantised,
so any difference in the sampling grid or the rounding shows up as whole steps.
"""
from __future__ import annotations

import numpy as np
import pytest

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture("openvla_center_crop")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


def test_center_crop_matches_upstream_tf(golden) -> None:
    from workers.policies.openvla.options import center_crop

    arrays, _, images = golden
    for i, img in enumerate(images):
        ours = center_crop(img, float(arrays["crop_scale"]))
        np.testing.assert_array_equal(ours, arrays["cropped"][i], err_msg=f"image {i} {img.shape}")
