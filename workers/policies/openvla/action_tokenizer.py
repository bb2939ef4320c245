"""OpenVLA's action de-tokenisation and un-normalisation, as pure numpy.

V = text vocab_size - pad_to_multiple_of (32000 for openvla-7b); the action ids are the last
n_action_bins ids below V, and a larger action gets a smaller id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.policies.errors import CheckpointError, UnknownUnnormKey


@dataclass(frozen=True)
class ActionTokenizer:
    base_vocab_size: int  # V
    n_bins: int = 256

    @property
    def bin_centers(self) -> np.ndarray:
        """The n_bins-1 midpoints of n_bins evenly spaced edges on [-1, 1]: c_k = -1 + (2k+1)/(n_bins-1)."""
        edges = np.linspace(-1.0, 1.0, self.n_bins)
        return (edges[:-1] + edges[1:]) / 2.0

    @property
    def first_action_id(self) -> int:
        return self.base_vocab_size - self.n_bins

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """k = clip(V - 1 - t, 0, n_bins - 2); a_norm = c_k. Works on any integer array shape."""
        k = np.clip(self.base_vocab_size - 1 - np.asarray(token_ids, dtype=np.int64), 0, self.n_bins - 2)
        return self.bin_centers[k]


def select_unnorm_key(norm_stats: dict[str, Any], key: str | None) -> str:
    """Upstream rules: no key + one dataset -> that one; no key + several, or unknown key -> error listing keys."""
    valid = sorted(norm_stats)
    if key is None:
        if len(valid) == 1:
            return valid[0]
        raise UnknownUnnormKey(None, valid)
    if key not in norm_stats:
        raise UnknownUnnormKey(key, valid)
    return key


@dataclass(frozen=True)
class ActionStats:
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_norm_stats(cls, entry: dict[str, Any], name: str = "") -> ActionStats:
        try:
            action = entry["action"]
            q01 = np.asarray(action["q01"], dtype=np.float64)
            q99 = np.asarray(action["q99"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"norm_stats[{name!r}] lacks action q01/q99") from exc
        mask = np.asarray(action.get("mask", [True] * len(q01)), dtype=bool)
        if not (q01.shape == q99.shape == mask.shape) or q01.ndim != 1:
            raise CheckpointError(f"norm_stats[{name!r}].action q01/q99/mask lengths differ")
        return cls(q01=q01, q99=q99, mask=mask)

    @property
    def action_dim(self) -> int:
        return int(self.q01.shape[0])

    def unnormalize(self, a_norm: np.ndarray) -> np.ndarray:
        """a = 0.5 (a_norm + 1)(q99 - q01) + q01 where mask, else a_norm (e.g. the gripper passes through)."""
        a_norm = np.asarray(a_norm, dtype=np.float64)
        scaled = 0.5 * (a_norm + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, scaled, a_norm)
