"""The inference stage as a plain function (the Celery task is a thin wrapper around it)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from workers.gpu import runtime
from workers.gpu.decode import described, to_observation
from workers.gpu.items import BatcherStopped, BatchFuture, DeadlineExceeded, ModelUnavailable
from workers.policies.base import PolicyResult
from workers.policies.errors import PolicyInputError
from workers.settings import Settings
from workers.stages.finish import announce_expired, finish_job
from workers.stages.retry import HandBack, retry_transient
from workers.store import jobs as jobstore
from workers.store.db import session_scope
from workers.wire import backlog, frames, notify, telemetry
from workers.wire.errors import JobError

log = logging.getLogger(__name__)
# The batcher's tie-break among equal deadlines (workers/gpu/schedule.py): a paying tier goes first; a tier
# it does not know sits between pro and free.
TIER_RANK = {"enterprise": 0, "pro": 1, "free": 2}


def run_inference(job: dict[str, Any], settings: Settings,
                  then: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """_run_inference, then `then(result)` for a job that ran (the hand-off to its safety stage), then the job
    leaves the model's backlog (what fail-fast admission counts), whatever the outcome: a job handed back is
    briefly uncounted, never counted twice. The hand-off goes first because it is on the job's critical path
    and the removal is not: the job counts in its model's backlog a publish longer, not a round trip later."""
    try:
        result = _run_inference(job, settings)
        if then is not None and not result.get("skip"):  # a skipped job has ended already: nothing to hand on
            then(result)
        return result
    finally:
        if job.get("kind", "interactive") == "interactive":
            try:
                backlog.done(notify.client(settings.redis_url), job["model"], job["job_id"])
            except Exception:  # an entry left behind stops counting at its deadline
                log.warning("backlog removal failed", extra={"job_id": job["job_id"]}, exc_info=True)


def _run_inference(job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Claim the job and run it through the batcher, the two at once; record the timing. Returns what the
    safety stage needs.

    The claim's round trip to PostgreSQL runs on a small pool of its own while this thread fetches the
    images (one HMGET), decodes them and queues the observation for the model, so neither waits for the
    other; the result is used only once the claim says the job may run. A job the claim refuses (canceled,
    ended, or past its deadline) has its item cancelled: dropped if its pass has not started, its result
    ignored if it has. Nothing is written before the claim except a failure to read the input, and that ends
    the job only if it is still active (jobstore's conditional UPDATE).
    """
    job_id = job["job_id"]
    claimed_at, t0 = time.time(), time.perf_counter()

    worker = runtime.current().hostname  # the name its heartbeat carries: the reaper releases its jobs by it

    def claim_it() -> jobstore.Claim:
        with session_scope(settings.database_url) as s:
            return jobstore.claim_for_inference(s, job_id, worker)

    claiming = _claim_pool(settings).submit(retry_transient, claim_it, job["deadline"], what="claim job")
    try:
        future = _submit(job, settings)
    except (PolicyInputError, frames.FramesMissing) as exc:
        refused = _settle(claiming)
        if refused is not None:  # ended already (a cancel deletes the images): nothing to report
            return {"skip": refused}
        return _end(settings, job, "failed", _input_error(exc))
    try:
        claim = claiming.result()
    except BaseException:
        future.cancel()
        raise
    if claim.state != "run":
        future.cancel()
        log.info("job not run", extra={"job_id": job_id, "state": claim.state})
        if claim.state == "expired":
            announce_expired(settings, job)
        return {"skip": claim.state}
    try:
        result = _result(future, claim.deadline_at)
    except PolicyInputError as exc:
        return _end(settings, job, "failed", JobError("invalid_input", exc.message, exc.field))
    except BatcherStopped as exc:  # draining (SIGTERM) before this item reached a forward pass
        raise HandBack(job_id) from exc
    except DeadlineExceeded as exc:  # the scheduler's reason, when it ended the item before its deadline
        return _end(settings, job, "expired", JobError("deadline_exceeded", exc.reason or ""))
    except FutureTimeout:
        return _end(settings, job, "expired", JobError("deadline_exceeded"))
    except ModelUnavailable:
        log.warning("model unavailable", extra={"job_id": job_id}, exc_info=True)
        return _end(settings, job, "failed", JobError("model_unavailable"))
    except Exception:  # fail closed: a broken model never yields an action
        log.exception("inference failed", extra={"job_id": job_id})
        return _end(settings, job, "failed", JobError("inference_error"))
    trace = future.trace
    inference_ms = (time.perf_counter() - t0) * 1000.0
    telemetry.inference_done(notify.client(settings.redis_url), job["model"], {**job, "claimed_at": claimed_at},
                             result.timings_ms, inference_ms, trace.batch_size, trace.batch_index == 0)
    log.info("inference done", extra={"job_id": job_id, "model": job["model"], "inference_ms": round(inference_ms, 3)})
    # No database write here: the timing travels to the safety task and lands with the final state.
    return {"skip": None, "inference": _serialise(result, inference_ms)}


_claims: ThreadPoolExecutor | None = None
_claims_lock = threading.Lock()


def _claim_pool(settings: Settings) -> ThreadPoolExecutor:
    """Claims overlap the image fetch and decode of their own job. One thread per database connection the
    process may hold: a burst of jobs claims as concurrently as when each task thread claimed for itself."""
    global _claims
    with _claims_lock:
        if _claims is None:
            _claims = ThreadPoolExecutor(max_workers=max(2, settings.db_pool_size), thread_name_prefix="claim")
        return _claims


def _settle(claiming: Future) -> str | None:
    """Let the claim finish before the job is ended for bad input; the state it found if it refused the job."""
    try:
        claim = claiming.result()
    except Exception:
        log.warning("claim failed for a job with unusable input", exc_info=True)
        return None
    return None if claim.state == "run" else claim.state


def _input_error(exc: PolicyInputError | frames.FramesMissing) -> JobError:
    if isinstance(exc, frames.FramesMissing):
        return JobError("images_missing", exc.why, f"images.{exc.camera}")
    return JobError("invalid_input", exc.message, exc.field)


def _submit(job: dict[str, Any], settings: Settings) -> BatchFuture:
    """Fetch the job's images from beside its message, decode them (the one place they are decoded) and queue
    the observation; the message's deadline is the row's, so the batcher drops the item uncomputed once it
    has passed."""
    wanted = described(job)
    # Retried as the claim is: a Redis that restarts under the job costs it a wait, not the job.
    stored = retry_transient(lambda: frames.fetch(notify.client(settings.redis_url), job["job_id"], wanted),
                             job["deadline"], what="fetch images") if wanted else None
    obs = to_observation(job, stored)
    remaining = job["deadline"] - time.time()
    priority = 1 if job.get("kind") == "replay" else 0
    return runtime.get_batcher().submit(obs, priority=priority, deadline=time.monotonic() + remaining,
                                        job_id=job["job_id"], tier_rank=TIER_RANK.get(job.get("tier") or "", 1))


def _result(future: BatchFuture, deadline_at: datetime) -> PolicyResult:
    remaining = (deadline_at - datetime.now(UTC)).total_seconds()
    try:
        return future.result(timeout=max(remaining, 0.001))
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


def _end(settings: Settings, job: dict[str, Any], state: str, error: JobError) -> dict[str, Any]:
    finish_job(settings, job, state, error=error)
    return {"skip": state}
