"""Result objects of one safety evaluation and their JSON form (the product spec's safety object)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from safety.constants import ADVISORY, SAFETY_VERSION

# Types that are JSON-safe as they are (exact types: numpy's scalars are not among them).
_AS_IS = frozenset({str, int, bool, type(None)})


def _clean(value: Any) -> Any:
    """JSON-safe: numpy to Python, NaN/inf to None (strict JSON has neither).

    The exact-type tests come first: a clamped 50-step chunk's report is a few thousand plain floats, ints and
    strings, and walking each through the isinstance chain below cost the safety stage about as much as the
    checks themselves (issue 26)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind in _AS_IS:
        return value
    if kind is list or kind is tuple:
        return [_clean(x) for x in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and np.isfinite(value).all():
            return value.tolist()  # the common case, without a Python-level walk over every element
        return _clean(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_clean(x) for x in value]
    if isinstance(value, dict):
        return {k: _clean(x) for k, x in value.items()}
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fields(obj: Any) -> dict[str, Any]:
    """A flat dataclass as JSON-safe dict. Not dataclasses.asdict: its deep copy cost ~40 us per object, and a
    clamped 50-step chunk carries a modification per step (issue 26). The field names come from the class's
    own (ordered) table, not dataclasses.fields(), which builds a tuple on every call."""
    return {name: _clean(getattr(obj, name)) for name in obj.__dataclass_fields__}


@dataclasses.dataclass
class Violation:
    check: str
    code: str
    message: str
    measured: float | None = None
    limit: float | None = None
    step_index: int | None = None
    dims: list[int] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass
class CheckRecord:
    name: str
    type: str  # "rule" | "alignment"
    status: str  # "passed" | "failed" | "skipped"
    latency_ms: float
    version: str = SAFETY_VERSION
    detail: dict[str, Any] | None = None  # alignment: confidence, threshold, explanation; rule: skip reason

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "type", "status", "latency_ms", "version")}
        if self.detail:
            out.update(self.detail)
        return _clean(out)


@dataclasses.dataclass
class Modification:
    check: str
    method: str  # "clamp" | "scale" | "project"
    step_index: int
    dims: list[int]
    before: list[float]
    after: list[float]
    factor: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass
class SafetyResult:
    decision: str  # "allowed" | "modified" | "rejected"
    mode: str
    actions: np.ndarray | None  # (T, D) as returned to the robot; None when rejected
    original_actions: np.ndarray
    violations: list[Violation]
    checks: list[CheckRecord]
    modifications: list[Modification]
    robot_profile: dict[str, Any]
    classifier_confidence: float | None
    latency_ms: float
    overall_score: float
    safety_version: str = SAFETY_VERSION
    advisory: str = ADVISORY

    @property
    def flags(self) -> list[str]:
        # Unique violation codes in first-seen order: short strings a dashboard can count.
        return list(dict.fromkeys(v.code for v in self.violations))

    @property
    def checks_passed(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "passed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall_score": round(float(self.overall_score), 6),
            "checks_passed": self.checks_passed,
            "flags": self.flags,
            "classifier_confidence": _clean(self.classifier_confidence),
            "modifications_applied": [m.to_dict() for m in self.modifications],
            "decision": self.decision,
            "mode": self.mode,
            "actions": None if self.actions is None else _clean(self.actions),
            "original_actions": _clean(self.original_actions),
            "violations": [v.to_dict() for v in self.violations],
            "checks": [c.to_dict() for c in self.checks],
            "robot_profile": dict(self.robot_profile),
            "safety_version": self.safety_version,
            "latency_ms": round(float(self.latency_ms), 4),
            "advisory": self.advisory,
        }
