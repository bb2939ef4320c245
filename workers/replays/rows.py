"""The per-step result row a replay stores, and how metrics, plots and exports read it.

Rows come from the job store as dicts or ORM objects; `as_row` accepts either so this library never
needs to know the table's class.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MODIFIED_DECISIONS = frozenset({"clamp", "clamped", "modified", "modify"})
REJECTED_DECISIONS = frozenset({"reject", "rejected"})
FIELDS = ("episode", "step", "predicted_action", "raw_action", "recorded_action", "safety_decision",
          "safety_flags", "safety_profile", "latency_ms")


@dataclass
class ReplayRow:
    episode: int
    step: int
    predicted_action: list[float] | None  # None where inference failed, expired or was rejected
    recorded_action: list[float]
    safety_decision: str | None = None  # "pass" | "clamp" | "reject" (synonyms above accepted)
    safety_flags: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    # What the model itself said, before the safety stage: kept when the delivered action was rejected or
    # clamped, so an evaluation always compares the model (None where inference failed or expired).
    raw_action: list[float] | None = None
    # The robot profile that judged the step (`<id>@<version>`); None where it was not judged (an error).
    safety_profile: str | None = None

    @property
    def judged(self) -> bool:
        return self.safety_decision is not None

    @property
    def model_action(self) -> list[float] | None:
        """The prediction metrics compare: the raw one, else (rows stored before raw_action) the delivered one."""
        return self.raw_action if self.raw_action is not None else self.predicted_action

    @property
    def modified(self) -> bool:
        return (self.safety_decision or "").lower() in MODIFIED_DECISIONS

    @property
    def rejected(self) -> bool:
        return (self.safety_decision or "").lower() in REJECTED_DECISIONS

    @property
    def flagged(self) -> bool:
        return bool(self.safety_flags) or self.modified or self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FIELDS}


def as_row(row: ReplayRow | Mapping[str, Any] | Any) -> ReplayRow:
    if isinstance(row, ReplayRow):
        return row
    get = row.get if isinstance(row, Mapping) else (lambda k, d=None: getattr(row, k, d))
    predicted, raw = get("predicted_action"), get("raw_action")
    latency = get("latency_ms")
    return ReplayRow(
        episode=int(get("episode")),
        step=int(get("step")),
        predicted_action=None if predicted is None else _floats(predicted),
        recorded_action=_floats(get("recorded_action") or []),
        safety_decision=get("safety_decision"),
        safety_flags=[str(f) for f in (get("safety_flags") or [])],
        latency_ms=None if latency is None else float(latency),
        raw_action=None if raw is None else _floats(raw),
        safety_profile=get("safety_profile"),
    )


def _floats(values: Sequence[float] | Any) -> list[float]:
    return [float(v) for v in list(values)]
