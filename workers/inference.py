"""The inference stage as a plain function (the Celery task is a thin wrapper around it)."""
from __future__ import annotations

import logging
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from workers import jobstore, notify, telemetry
from workers.batch_items import ItemTrace
from workers.batcher import DeadlineExceeded, ModelUnavailable
from workers.payload import to_observation
from workers.policies.base import PolicyResult
from workers.policies.errors import PolicyInputError
from workers.runtime import get_batcher
from workers.settings import Settings
from workers.store.db import session_scope

log = logging.getLogger(__name__)


def run_inference(job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Claim the job, run it through the batcher, record the timing. Returns what the safety stage needs."""
    job_id = job["job_id"]
    with session_scope(settings.database_url) as s:
        claim = jobstore.claim_for_inference(s, job_id)
    if claim.state != "run":
        log.info("job not run", extra={"job_id": job_id, "state": claim.state})
        if claim.state == "expired":
            notify.job_ended(notify.client(settings.redis_url), job, "expired")
        return {"skip": claim.state}
    claimed_at, t0 = time.time(), time.perf_counter()
    try:
        result, trace = _predict(job, claim.deadline_at)
    except PolicyInputError as exc:
        return _end(settings, job, "failed", {"code": "invalid_input", "field": exc.field, "detail": exc.message})
    except (DeadlineExceeded, FutureTimeout):
        return _end(settings, job, "expired", {"code": "deadline_exceeded",
                                                   "detail": "the deadline passed before the action was computed"})
    except ModelUnavailable as exc:
        return _end(settings, job, "failed", {"code": "model_unavailable", "detail": str(exc)})
    except Exception as exc:  # fail closed: a broken model never yields an action
        log.exception("inference failed", extra={"job_id": job_id})
        return _end(settings, job, "failed", {"code": "inference_error", "detail": f"{type(exc).__name__}: {exc}"})
    inference_ms = (time.perf_counter() - t0) * 1000.0
    telemetry.inference_done(notify.client(settings.redis_url), job["model"], {**job, "claimed_at": claimed_at},
                             result.timings_ms, inference_ms, trace.batch_size, trace.batch_index == 0)
    log.info("inference done", extra={"job_id": job_id, "model": job["model"], "inference_ms": round(inference_ms, 3)})
    # No database write here: the timing travels to the safety task and lands with the final state.
    return {"skip": None, "inference": _serialise(result, inference_ms)}


def _predict(job: dict[str, Any], deadline_at: datetime) -> tuple[PolicyResult, ItemTrace]:
    obs = to_observation(job)
    batcher = get_batcher()
    remaining = (deadline_at - datetime.now(UTC)).total_seconds()
    priority = 1 if job.get("kind") == "replay" else 0
    future = batcher.submit(obs, priority=priority, deadline=time.monotonic() + remaining, job_id=job["job_id"])
    try:
        return future.result(timeout=max(remaining, 0.001)), future.trace
    except FutureTimeout:
        future.cancel()
        raise


def _serialise(result: PolicyResult, inference_ms: float) -> dict[str, Any]:
    return {
        "actions": result.actions.tolist(),
        "action_type": result.action_type,
        "units": list(result.units),
        "unnorm_key": result.unnorm_key,
        "model_timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
        "inference_ms": round(inference_ms, 3),
        "inference_done_at": time.time(),
    }


def _end(settings: Settings, job: dict[str, Any], state: str, error: dict[str, Any]) -> dict[str, Any]:
    with session_scope(settings.database_url) as s:
        changed = jobstore.finish(s, job["job_id"], state, error=error)
    if changed:
        notify.job_ended(notify.client(settings.redis_url), job, state)
        telemetry.job_finished(notify.client(settings.redis_url), job, state)
    return {"skip": state}
