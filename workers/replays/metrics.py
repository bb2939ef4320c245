"""Summary metrics between the model's predicted and the recorded actions, accumulated step by step.

They compare the model's raw prediction (before the safety stage), so a rejected or clamped step still
measures the model; what the safety stage did is counted separately, under "safety".

The accumulator holds only sums and counts, so it can be updated per step, merged across workers or
chunks, serialised into the job row, and rebuilt from stored rows when a replay resumes. Each dimension
compares the first min(len(predicted), len(recorded)) entries, so a 7-DoF policy can be replayed on a
dataset with extra action dims (they are simply not compared) without failing the whole replay.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.replays.rows import ReplayRow, as_row

TRANSLATION_DIMS = (0, 1, 2)
GRIPPER_DIM = 6


@dataclass
class ActionMetrics:
    # Binarise the gripper at this value: 0.5 for [0, 1] grippers (OpenVLA), 0.0 for [-1, 1] ones.
    gripper_threshold: float = 0.5
    # |x| below this counts as zero for sign agreement, so recorded "no motion" is not a coin toss.
    sign_deadband: float = 1e-3
    steps: int = 0
    compared: int = 0
    missing_predictions: int = 0
    dim_mismatches: int = 0
    count: list[int] = field(default_factory=list)
    sq_err: list[float] = field(default_factory=list)
    abs_err: list[float] = field(default_factory=list)
    sign_agree: list[int] = field(default_factory=list)
    gripper_agree: int = 0
    gripper_count: int = 0
    flagged: int = 0
    modified: int = 0
    rejected: int = 0
    flags: Counter = field(default_factory=Counter)
    judged: int = 0
    profiles: Counter = field(default_factory=Counter)

    def update(self, predicted: Sequence[float] | np.ndarray | None, recorded: Sequence[float] | np.ndarray,
               *, decision: str | None = None, flags: Iterable[str] = ()) -> None:
        self.update_row(ReplayRow(0, 0, None if predicted is None else list(np.asarray(predicted, float)),
                                  list(np.asarray(recorded, float)), decision, list(flags)))

    def update_row(self, row: Any) -> None:
        row = as_row(row)
        self.steps += 1
        self.flagged += row.flagged
        self.modified += row.modified
        self.rejected += row.rejected
        self.flags.update(row.safety_flags)
        if row.judged:
            self.judged += 1
            self.profiles[row.safety_profile or "unknown"] += 1
        if row.model_action is None:
            self.missing_predictions += 1
            return
        pred, rec = np.asarray(row.model_action, float), np.asarray(row.recorded_action, float)
        self.dim_mismatches += pred.size != rec.size
        d = min(pred.size, rec.size)
        if d == 0:
            return
        self._grow(d)
        self.compared += 1
        err = pred[:d] - rec[:d]
        for i in range(d):
            self.count[i] += 1
            self.sq_err[i] += float(err[i] ** 2)
            self.abs_err[i] += float(abs(err[i]))
        for i in TRANSLATION_DIMS[: min(d, len(TRANSLATION_DIMS))]:
            self.sign_agree[i] += int(self._sign(pred[i]) == self._sign(rec[i]))
        if d > GRIPPER_DIM:
            self.gripper_count += 1
            t = self.gripper_threshold
            self.gripper_agree += int((pred[GRIPPER_DIM] > t) == (rec[GRIPPER_DIM] > t))

    def _sign(self, x: float) -> int:
        return 0 if abs(x) < self.sign_deadband else (1 if x > 0 else -1)

    def _grow(self, d: int) -> None:
        extra = d - len(self.count)
        if extra > 0:
            self.count += [0] * extra
            self.sq_err += [0.0] * extra
            self.abs_err += [0.0] * extra
            self.sign_agree += [0] * extra

    def merge(self, other: ActionMetrics) -> ActionMetrics:
        """Add another accumulator's counts into this one (same thresholds assumed); returns self."""
        self._grow(len(other.count))
        for i in range(len(other.count)):
            self.count[i] += other.count[i]
            self.sq_err[i] += other.sq_err[i]
            self.abs_err[i] += other.abs_err[i]
            self.sign_agree[i] += other.sign_agree[i]
        for name in ("steps", "compared", "missing_predictions", "dim_mismatches", "gripper_agree",
                     "gripper_count", "flagged", "modified", "rejected", "judged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.flags.update(other.flags)
        self.profiles.update(other.profiles)
        return self

    @classmethod
    def from_rows(cls, rows: Iterable[Any], **options: float) -> ActionMetrics:
        acc = cls(**options)
        for row in rows:
            acc.update_row(row)
        return acc

    def to_state(self) -> dict[str, Any]:
        """JSON-able raw counts (for storing a partial accumulator); `from_state` inverts it."""
        state = dict(self.__dict__)
        state["flags"] = dict(self.flags)
        state["profiles"] = dict(self.profiles)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ActionMetrics:
        state = dict(state)
        state["flags"] = Counter(state.get("flags", {}))
        state["profiles"] = Counter(state.get("profiles", {}))
        return cls(**state)

    def summary(self) -> dict[str, Any]:
        dims = [{"dim": i, "count": n, "mse": _div(self.sq_err[i], n), "mae": _div(self.abs_err[i], n)}
                for i, n in enumerate(self.count)]
        sign = {str(i): _div(self.sign_agree[i], self.count[i]) for i in TRANSLATION_DIMS if i < len(self.count)}
        total = sum(self.count)
        return {
            "steps": self.steps,
            "compared_on": "raw_prediction",
            "compared_steps": self.compared,
            "missing_predictions": self.missing_predictions,
            "dim_mismatches": self.dim_mismatches,
            "mse": _div(sum(self.sq_err), total),
            "mae": _div(sum(self.abs_err), total),
            "per_dim": dims,
            "sign_agreement": sign,
            "sign_agreement_mean": _mean([v for v in sign.values() if v is not None]),
            "gripper_agreement": _div(self.gripper_agree, self.gripper_count),
            "gripper_threshold": self.gripper_threshold,
            "safety": self._safety(),
        }

    def _safety(self) -> dict[str, Any]:
        """What the safety stage did. Counts are over judged steps only, and a count is None (not 0) when no
        step was judged: an unjudged step is not a clean one."""
        judged = self.judged or None
        return {"judged_steps": self.judged, "unjudged_steps": self.steps - self.judged,
                "profiles": dict(self.profiles),
                "flagged_steps": judged and self.flagged, "modified": judged and self.modified,
                "rejected": judged and self.rejected,
                "violations": judged and sum(self.flags.values()), "by_flag": dict(self.flags)}


def _div(a: float, b: int) -> float | None:
    return a / b if b else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
