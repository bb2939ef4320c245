"""The safety shield: run the rule checks and alignment checks on an action or chunk and decide.

Modes: reject (any violation: no action), clamp (project onto the safe set, then re-verify; reject what cannot
be fixed), monitor (flag only, action unchanged). A malformed output (wrong shape, NaN/inf) is rejected in every
mode, since there is no meaningful action to deliver or shadow. Invalid configuration raises SafetyConfigError;
this function never returns a half-evaluated result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from safety.alignment.base import AlignmentCheck
from safety.alignment.runner import run_alignment
from safety.checks import MAX_VIOLATIONS_PER_CHECK, Inputs, run_rule_checks
from safety.clamp import clamp
from safety.config import RobotConfig, normalise_mode
from safety.constants import MAX_CHUNK_STEPS
from safety.request import Options, parse_options, parse_state, parse_stats, validate_robot_config
from safety.result import CheckRecord, SafetyResult, Violation

HARD_LIMIT_CHECKS = ("gripper_range", "velocity", "workspace", "collision")
UNFIXABLE = ("training_range",)  # clamp mode rejects these: moving a value into range would be a guess


def _coerce(actions: Any, dim: int) -> tuple[np.ndarray, list[CheckRecord], list[Violation]]:
    """(T, D) float64 array plus the action_shape / finite_values records; violations mean 'reject'."""
    t0 = time.perf_counter()
    try:
        arr = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty((0, dim))
        bad = Violation("action_shape", "ACTION_SHAPE", "actions are not a numeric array")
        return arr, [CheckRecord("action_shape", "rule", "failed", 0.0), _skip("finite_values")], [bad]
    arr = arr[None, :] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != dim or not 1 <= arr.shape[0] <= MAX_CHUNK_STEPS:
        msg = f"expected shape (T, {dim}) or ({dim},) with 1 <= T <= {MAX_CHUNK_STEPS}, got {np.shape(actions)}"
        bad = Violation("action_shape", "ACTION_SHAPE", msg, None, float(dim))
        records = [CheckRecord("action_shape", "rule", "failed", _ms(t0)), _skip("finite_values")]
        return arr.reshape(1, -1) if arr.ndim != 2 else arr, records, [bad]
    shape_ok = CheckRecord("action_shape", "rule", "passed", _ms(t0))
    t1 = time.perf_counter()
    steps, dims = np.nonzero(~np.isfinite(arr))
    cells = list(zip(steps.tolist(), dims.tolist(), strict=True))[:MAX_VIOLATIONS_PER_CHECK]
    violations = [Violation("finite_values", "NON_FINITE", f"step {t}: dimension {d} is not finite", None, None,
                            t, [d]) for t, d in cells]
    finite = CheckRecord("finite_values", "rule", "failed" if violations else "passed", _ms(t1))
    return arr, [shape_ok, finite], violations


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _skip(name: str, reason: str = "not run: the action is malformed") -> CheckRecord:
    return CheckRecord(name, "rule", "skipped", 0.0, detail={"reason": reason})


def _alignment(checks: Sequence[AlignmentCheck] | None, opts: Options, inp: Inputs, state: Mapping | None,
               mode: str) -> tuple[list[CheckRecord], list[Violation], float | None]:
    if not checks:
        return [], [], None
    if not opts.enable_classifier:
        return [CheckRecord(c.name, "alignment", "skipped", 0.0, c.version, {"reason": "disabled by request"})
                for c in checks], [], None
    ctx = {"robot_config": inp.cfg, "robot_state": state, "mode": mode,
           "positions": None if inp.position is None else inp.positions()}
    return run_alignment(checks, inp.actions, ctx, opts.safety_threshold)


def _score(records: list[CheckRecord], confidence: float | None) -> float:
    ran = [r for r in records if r.status != "skipped"]
    score = sum(r.status == "passed" for r in ran) / len(ran) if ran else 0.0
    return score if confidence is None else min(score, confidence)


def _decide(mode: str, inp: Inputs, violations: list[Violation]) -> tuple[str, np.ndarray | None, list]:
    """(decision, returned actions, modifications) for a well-formed chunk."""
    if not violations or mode == "monitor":
        return "allowed", inp.actions, []
    if mode == "reject" or any(v.check not in HARD_LIMIT_CHECKS for v in violations):
        return "rejected", None, []  # alignment and training-range failures cannot be clamped away
    fixed, mods = clamp(inp)
    after = Inputs(fixed, inp.cfg, inp.position, inp.orientation, None, None)
    _, remaining = run_rule_checks(after, names=HARD_LIMIT_CHECKS)
    if remaining:
        violations.append(Violation("shield", "CLAMP_UNRESOLVED", "clamping could not satisfy every limit: "
                                    + ", ".join(sorted({v.code for v in remaining}))))
        return "rejected", None, []
    return "modified", fixed, mods


def evaluate(actions: Any, *, robot_config: Mapping[str, Any] | None = None,
             robot_state: Mapping[str, Any] | None = None, mode: str | None = None,
             action_stats: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
             alignment_checks: Sequence[AlignmentCheck] | None = None,
             default_type: str | None = None) -> SafetyResult:
    """Evaluate one action (7,) or a chunk (T, 7); raises SafetyConfigError for invalid inputs."""
    t0 = time.perf_counter()
    cfg: RobotConfig = validate_robot_config(robot_config, default_type=default_type)
    opts = parse_options(options)
    mode = normalise_mode(mode if mode is not None else opts.mode or cfg.default_mode)
    position, orientation = parse_state(robot_state)
    q_low, q_high = parse_stats(action_stats, cfg.action_dim, opts.training_range_tolerance)
    arr, records, violations = _coerce(actions, cfg.action_dim)
    common = {"mode": mode, "original_actions": arr, "robot_profile": cfg.summary()}
    if violations:
        records += [_skip(name) for name in ("gripper_range", "training_range", "velocity", "workspace",
                                              "collision")]
        records += [_skip(c.name) for c in alignment_checks or ()]
        return SafetyResult("rejected", actions=None, violations=violations, checks=records, modifications=[],
                            classifier_confidence=None, latency_ms=_ms(t0), overall_score=0.0, **common)
    inp = Inputs(arr, cfg, position, orientation, q_low, q_high)
    rule_records, violations = run_rule_checks(inp)
    al_records, al_violations, confidence = _alignment(alignment_checks, opts, inp, robot_state, mode)
    records += rule_records + al_records
    violations += al_violations
    decision, out, mods = _decide(mode, inp, violations)
    return SafetyResult(decision, actions=out, violations=violations, checks=records, modifications=mods,
                        classifier_confidence=confidence, latency_ms=_ms(t0),
                        overall_score=_score(records, confidence), **common)
