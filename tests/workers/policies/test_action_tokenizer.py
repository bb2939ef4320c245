"""OpenVLA de-tokenisation and un-normalisation against hand-computed values (reference §8-§10)."""
from __future__ import annotations

import numpy as np
import pytest

from workers.policies.errors import CheckpointError, UnknownUnnormKey
from workers.policies.openvla.action_tokenizer import ActionStats, ActionTokenizer, select_unnorm_key

LLAMA = ActionTokenizer(base_vocab_size=32064 - 64, n_bins=256)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (31999, -1 + 1 / 255),  # k = 0: -0.99608
        (31872, 0.0),  # k = 127
        (31745, 1 - 1 / 255),  # k = 254
        (31744, 1 - 1 / 255),  # k = 255 clipped to 254
        (29871, 1 - 1 / 255),  # ordinary text id: clipped to the top bin
        (32000, -1 + 1 / 255),  # <PAD>: clipped to bin 0
        (32063, -1 + 1 / 255),  # padding row
    ],
)
def test_decode_table(token: int, expected: float) -> None:
    assert LLAMA.decode(np.array([token]))[0] == pytest.approx(expected, abs=1e-12)


def test_decode_rounded_values_from_reference() -> None:
    got = LLAMA.decode(np.array([31999, 31872, 31745]))
    np.testing.assert_allclose(got, [-0.99608, 0.0, 0.99608], atol=5e-6)


def test_bin_centres_are_midpoints() -> None:
    c = LLAMA.bin_centers
    assert c.shape == (255,)
    np.testing.assert_allclose(np.diff(c), 2 / 255)
    k = np.arange(255)
    np.testing.assert_allclose(c, -1 + (2 * k + 1) / 255)


def test_generalised_vocab_for_tiny_layout() -> None:
    tiny = ActionTokenizer(base_vocab_size=512)
    assert tiny.first_action_id == 256
    np.testing.assert_allclose(tiny.decode(np.array([511, 384, 257])), [-1 + 1 / 255, 0.0, 1 - 1 / 255])


def stats(mask: list[bool] | None = None) -> ActionStats:
    action = {"q01": [-1.0, 0.0, 2.0], "q99": [1.0, 4.0, 3.0]}
    if mask is not None:
        action["mask"] = mask
    return ActionStats.from_norm_stats({"action": action})


def test_unnormalize_by_hand() -> None:
    # a = 0.5 (a_norm + 1)(q99 - q01) + q01
    got = stats().unnormalize(np.array([0.0, -1.0, 0.5]))
    np.testing.assert_allclose(got, [0.0, 0.0, 0.5 * 1.5 * 1.0 + 2.0])
    assert got.dtype == np.float64


def test_mask_false_passes_through() -> None:
    got = stats([True, False, False]).unnormalize(np.array([1.0, 0.25, -0.5]))
    np.testing.assert_allclose(got, [1.0, 0.25, -0.5])


def test_missing_mask_means_all_true() -> None:
    assert stats().mask.tolist() == [True, True, True]


def test_bad_stats_are_checkpoint_errors() -> None:
    with pytest.raises(CheckpointError):
        ActionStats.from_norm_stats({"action": {"q01": [0.0]}})
    with pytest.raises(CheckpointError):
        ActionStats.from_norm_stats({"action": {"q01": [0.0], "q99": [1.0, 2.0]}})


def test_unnorm_key_rules() -> None:
    one = {"bridge_orig": {}}
    several = {"bridge_orig": {}, "fractal20220817_data": {}}
    assert select_unnorm_key(one, None) == "bridge_orig"
    assert select_unnorm_key(several, "fractal20220817_data") == "fractal20220817_data"
    with pytest.raises(UnknownUnnormKey) as err:
        select_unnorm_key(several, None)
    assert err.value.valid == ["bridge_orig", "fractal20220817_data"]
    with pytest.raises(UnknownUnnormKey) as err:
        select_unnorm_key(several, "bridge")
    assert err.value.field == "unnorm_key" and "bridge_orig" in str(err.value)
