"""The alignment-check plugin interface.

An alignment check judges whether an action fits its context (a learned classifier, a scene rule, a policy
of the customer's). Unlike rule checks it may be slow or wrong, so each has a time budget, and the runner
counts a check that raises, times out or returns garbage as failed (fail closed).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class AlignmentCheck(abc.ABC):
    """Subclass, set the class attributes, implement check().

    check(action, context) gets the (T, 7) float64 chunk (T = 1 for a single action) and a context dict:
      "robot_config": safety.config.RobotConfig   the resolved profile with overrides
      "robot_state": dict | None                  as sent by the client
      "positions": np.ndarray | None              (T, 3) ee position after each step, None without a state
      "threshold": float                          the request's safety_threshold, else this check's threshold
      "mode": str                                 reject | clamp | monitor
    and returns (is_aligned, confidence, explanation), confidence in [0, 1] being the check's belief that
    the action is aligned (safe).
    """

    name: str = "alignment"
    version: str = "0.0.0"
    time_budget_ms: float = 50.0
    threshold: float = 0.5

    @abc.abstractmethod
    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}@{self.version} budget={self.time_budget_ms}ms>"
