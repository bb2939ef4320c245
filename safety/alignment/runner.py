"""Runs alignment checks under their time budgets and turns outcomes into check records and violations."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from safety.alignment.base import AlignmentCheck
from safety.result import CheckRecord, Violation


def _call_with_budget(check: AlignmentCheck, actions: np.ndarray, context: dict[str, Any]) -> tuple[str, Any]:
    """("ok", value) | ("error", exc) | ("timeout", None).

    A daemon thread so a hung plugin cannot block the safety worker past its budget; Python cannot kill the
    thread, so a plugin that never returns leaks one thread per call (visible in the "timeout" flags).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = check.check(actions.copy(), context)
        except BaseException as exc:  # noqa: BLE001 - any plugin failure must become a failed check
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"alignment-{check.name}", daemon=True)
    worker.start()
    worker.join(check.time_budget_ms / 1e3)
    if worker.is_alive():
        return "timeout", None
    if "error" in box:
        return "error", box["error"]
    return "ok", box.get("value")


def _parse(value: Any) -> tuple[bool, float, str] | None:
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    aligned, conf, why = value
    if not isinstance(aligned, (bool, np.bool_)) or not isinstance(conf, (int, float, np.floating)):
        return None
    conf = float(conf)
    if not math.isfinite(conf) or not 0.0 <= conf <= 1.0:
        return None
    return bool(aligned), conf, str(why)


def _one(check: AlignmentCheck, actions: np.ndarray, context: dict[str, Any],
         threshold: float) -> tuple[CheckRecord, Violation | None, float | None]:
    ctx = dict(context, threshold=threshold)
    t0 = time.perf_counter()
    kind, value = _call_with_budget(check, actions, ctx)
    ms = (time.perf_counter() - t0) * 1e3
    detail: dict[str, Any] = {"threshold": threshold, "time_budget_ms": check.time_budget_ms}
    parsed = _parse(value) if kind == "ok" else None
    if kind == "ok" and ms > check.time_budget_ms:
        kind = "timeout"  # finished, but later than promised: a late verdict is still a failure
    if kind == "ok" and parsed is None:
        kind, value = "error", TypeError("check() must return (bool, float in [0, 1], str)")
    if kind != "ok":
        code = "ALIGNMENT_TIMEOUT" if kind == "timeout" else "ALIGNMENT_ERROR"
        msg = (f"{check.name} exceeded its {check.time_budget_ms} ms budget" if kind == "timeout"
               else f"{check.name} raised {type(value).__name__}: {value}")
        detail["explanation"] = msg
        return CheckRecord(check.name, "alignment", "failed", ms, check.version, detail), \
            Violation(check.name, code, msg), None
    aligned, conf, why = parsed
    detail.update(confidence=conf, explanation=why)
    record = CheckRecord(check.name, "alignment", "passed" if aligned else "failed", ms, check.version, detail)
    violation = None if aligned else Violation(check.name, "ALIGNMENT_FLAGGED", f"{check.name}: {why}", conf,
                                               threshold)
    return record, violation, conf


def run_alignment(checks: Sequence[AlignmentCheck], actions: np.ndarray, context: dict[str, Any],
                  threshold: float | None) -> tuple[list[CheckRecord], list[Violation], float | None]:
    """Run every check; the returned confidence is the lowest one reported (None if none reported one)."""
    records, violations, confs = [], [], []
    for check in checks:
        record, violation, conf = _one(check, actions, context, check.threshold if threshold is None else threshold)
        records.append(record)
        violations += [violation] if violation else []
        confs += [conf] if conf is not None else []
    return records, violations, (min(confs) if confs else None)
