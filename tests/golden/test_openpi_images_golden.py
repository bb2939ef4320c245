"""pi0's image resize against openpi-client's `image_tools` (tests/golden/openpi_images.npz).

openpi resizes on the client with `resize_with_pad(img, 224, 224)` (PIL bilinear, int() truncation of the
scaled size, zero padding split with int(), i.e. extra row/column bottom/right). Tolerance: exact (uint8
equal), since the reference is itself deterministic PIL code.
"""
from __future__ import annotations

import numpy as np
import pytest

from ops.golden.fixture import load_fixture
from ops.golden.inputs import regenerate_images
from workers.policies import preprocess


@pytest.fixture(scope="module")
def golden():
    arrays, meta = load_fixture("openpi_images")
    return arrays, meta, regenerate_images(arrays["input_specs"], arrays["input_digests"])


def _cases(golden, *, identity: bool):
    arrays, _, images = golden
    for i, img in enumerate(images):
        stored = f"resized_{i}" in arrays
        if stored != identity:
            yield i, img, arrays[f"resized_{i}"] if stored else img


def test_already_224_is_unchanged(golden) -> None:
    cases = list(_cases(golden, identity=True))
    assert cases, "the fixture has no 224x224 input"
    for _, img, want in cases:
        np.testing.assert_array_equal(preprocess.resize_with_pad(img, 224), want)


def test_resize_with_pad_matches_openpi(golden) -> None:
    for i, img, want in _cases(golden, identity=False):
        np.testing.assert_array_equal(preprocess.resize_with_pad(img, 224), want, err_msg=f"image {i} {img.shape}")


def test_convert_to_uint8_matches_openpi(golden) -> None:
    convert = getattr(preprocess, "convert_to_uint8", None)
    if convert is None:
        pytest.skip("the service takes uint8 images only; no float-image conversion to compare yet")
    arrays, _, _ = golden
    np.testing.assert_array_equal(convert(arrays["float_0"]), arrays["uint8_0"])
