"""The safety stage: one adapter over the `safety` library, used by interactive jobs AND replay steps, so
both get the same rule checks, the same alignment plugins and the same fail-closed behaviour.

`judge` is the adapter; `run_safety` is the job task's stage: judge, then end the job exactly once.
"""
from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from safety.alignment import load_alignment_checks
from safety.shield import evaluate
from workers.settings import Settings
from workers.stages.finish import finish_job
from workers.store import jobs as jobstore
from workers.wire.errors import JobError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _alignment_checks(enabled: bool, path: str, threshold: float, import_paths: tuple[str, ...]) -> tuple:
    # Loaded once per process; a broken plugin raises here and fails the job (or the step) closed.
    return tuple(load_alignment_checks(enabled=enabled, path=path, threshold=threshold,
                                       import_paths=list(import_paths)))


def judge(actions: Any, *, robot_config: dict[str, Any] | None, robot_state: dict[str, Any] | None,
          options: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """The safety report for one action (or chunk); raises if it cannot be judged (callers fail closed)."""
    opts = options or {}
    enabled = opts.get("enable_classifier")
    enabled = settings.safety_classifier_enabled if enabled is None else bool(enabled)
    checks = _alignment_checks(enabled, settings.safety_classifier_path, settings.safety_classifier_threshold,
                               settings.safety_alignment_checks)
    result = evaluate(
        np.asarray(actions, dtype=np.float64),
        robot_config=robot_config,
        robot_state=robot_state,
        mode=opts.get("mode") or None,
        action_stats=None,
        options={k: v for k, v in (("enable_classifier", enabled), ("safety_threshold", opts.get("safety_threshold")))
                 if v is not None},
        alignment_checks=list(checks),
    )
    return result.to_dict()


def run_safety(prev: dict[str, Any], job: dict[str, Any], settings: Settings) -> str:
    """Check the inference output, then finish the job exactly once. Returns the job's final state."""
    job_id = job["job_id"]
    if prev.get("skip"):
        return prev["skip"]
    t0 = time.perf_counter()
    inference = prev["inference"]
    try:
        report = judge(inference["actions"], robot_config=job.get("robot_config"), robot_state=job.get("robot_state"),
                       options=job.get("safety"), settings=settings)
    except Exception:
        log.exception("safety stage failed", extra={"job_id": job_id})
        return _finish(settings, job, "failed", error=JobError("safety_error"))
    timings = jobstore.StageTimings(inference["inference_ms"], inference["inference_done_at"],
                                    (time.perf_counter() - t0) * 1000.0)
    if datetime.fromtimestamp(job["deadline"], UTC) <= datetime.now(UTC):
        return _finish(settings, job, "expired", timings=timings,
                       error=JobError("deadline_exceeded", "the deadline passed during the safety check"))
    return _finish(settings, job, "succeeded", result=build_result(inference, report), timings=timings)


def build_result(inference: dict[str, Any], safety: dict[str, Any]) -> dict[str, Any]:
    """The stored result: the action as the safety stage left it (null when rejected), with units."""
    actions = safety.get("actions")
    chunk = len(inference["actions"])
    values = None if actions is None else (actions[0] if chunk == 1 else actions)
    return {
        "action": {
            "type": inference["action_type"],
            "dimensions": len(inference["actions"][0]),
            "chunk_length": chunk,
            "values": values,
            "units": inference["units"],
            "unnorm_key": inference.get("unnorm_key"),
        },
        "safety": safety,
        "model_timings_ms": inference["model_timings_ms"],
    }


def _finish(settings: Settings, job: dict[str, Any], state: str, *, result: dict[str, Any] | None = None,
            error: JobError | None = None, timings: jobstore.StageTimings | None = None) -> str:
    finish_job(settings, job, state, result=result, error=error, timings=timings)
    return state
