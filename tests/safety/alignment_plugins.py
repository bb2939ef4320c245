"""Alignment-check plugins used by the tests, loaded through the real import-path and entry-point mechanisms."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from safety.alignment import AlignmentCheck


class AlwaysAligned(AlignmentCheck):
    name = "always_aligned"
    version = "1.0.0"

    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        return True, 0.9, "fine"


class GripperMustBeOpen(AlignmentCheck):
    """A scene-style rule: confidence is the minimum gripper opening, compared with the threshold."""

    name = "gripper_must_be_open"
    version = "0.2.0"

    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        conf = float(np.clip(action[:, 6].min(), 0.0, 1.0))
        return conf >= context["threshold"], conf, f"min opening {conf:.2f}"


class Exploding(AlignmentCheck):
    name = "exploding"

    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        raise RuntimeError("plugin bug")


class Slow(AlignmentCheck):
    name = "slow"
    time_budget_ms = 20.0

    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        time.sleep(0.5)
        return True, 1.0, "late"


class BadReturn(AlignmentCheck):
    name = "bad_return"

    def check(self, action: np.ndarray, context: dict[str, Any]) -> Any:
        return "yes"


def make_always_aligned() -> AlwaysAligned:
    """A factory, to show entry points may name a callable returning an instance."""
    return AlwaysAligned()


NOT_A_CHECK = object
