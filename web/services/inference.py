"""Submit one inference request and wait for its safety-checked action: the path shared by
`POST /v1/inference` and the compatibility adapters (OpenVLA's `/act`, openpi's websocket)."""
from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import ValidationError

from web import timing
from web.api.jobs.schemas import InferenceRequestSchema
from web.errors import ApiError, accepted_wait_failed, is_backend_error
from web.services import admission, idempotency, submit
from web.services.public_errors import public_error
from web.services.waiting import wait_for
from workers.store.models import Job

FAILURES = {
    "invalid_input": (422, "the model could not use this input"),
    "deadline_exceeded": (504, "the deadline passed before an action was ready; no action is returned"),
    "model_unavailable": (503, "the model's worker cannot serve it"),
    "images_missing": (503, "the images were lost before a worker read them"),
    # The reaper ended it: an outage lost its message or worker. The service's failure, not the input's: a 503
    # that names the job (issue 22: accepted work is answered with its id or a 503 that tells it).
    "lost": (503, "no action is returned"),
}


def load_request(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a request body built by an adapter with the same schema as the REST endpoint (its images may be
    PendingImages: arrays, converted after admission; the schema's ImageField takes them as they are)."""
    try:
        return InferenceRequestSchema().load(body)
    except ValidationError as exc:
        messages = exc.normalized_messages()
        detail = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                           for k, v in sorted(messages.items(), key=lambda kv: str(kv[0])))
        first = str(min(messages, key=str))
        raise ApiError(422, "validation_error", f"invalid request: {detail}", field=first) from None


def submit_and_wait(data: dict[str, Any]) -> Job:
    """Admit (key already checked; limits, quota, in-flight, queue depth), enqueue, and block until the job
    is final, its deadline passes, or WAIT_MAX_S runs out.

    Idempotency-Key (a header on /v1/inference and /act; the websocket's per-message key becomes the same
    header): a retry with the key and body of an earlier request waits on that request's job instead of making
    another, and counts no rate-limit unit; the job is charged once, when it ends. Once the job's row is
    committed, a backend error while waiting answers 503 with its id and Location (AcceptedError), never as if
    nothing had happened."""
    job = idempotency.submit_once(
        Job, lambda: submit.request_hash(data),
        lambda key, req_hash: admission.submit_job(data, waiter=True, idempotency_key=key, req_hash=req_hash))
    try:
        with timing.phase("wait"):
            return wait_for(job, current_app.config["SETTINGS"].wait_max_s)
    except Exception as exc:
        if not is_backend_error(exc):
            raise
        raise accepted_wait_failed(str(job.id), exc) from None


def raise_for_failure(job: Job) -> None:
    """The job's failure as a problem document; nothing for a job that succeeded or is still running."""
    if job.state in ("succeeded", "queued", "running"):
        return
    # Our code and sentence only: the stored detail may carry exception text (public_errors).
    err = public_error(job.error) or {"code": job.state, "detail": f"the job ended {job.state}"}
    status, title = FAILURES.get(err["code"], (502, "the job did not complete"))
    raise ApiError(status, err["code"], f"{title}: {err['detail']}", field=err.get("field"),
                   headers={"Retry-After": "1"} if status == 503 else None, job_id=str(job.id), state=job.state)


def final_action(job: Job) -> dict[str, Any]:
    """The action of a finished job, for adapters that can only answer with actions: a job still running
    after the wait, or an action the safety stage rejected, is a problem document instead."""
    raise_for_failure(job)
    if job.state != "succeeded":
        raise ApiError(504, "still_running", f"job {job.id} did not finish within the wait; fetch it later",
                       job_id=str(job.id), state=job.state)
    result = job.result or {}
    action = result.get("action") or {}
    if action.get("values") is None:
        safety = result.get("safety") or {}
        raise ApiError(422, "action_rejected", "the safety stage rejected this action; no action is returned",
                       job_id=str(job.id), safety=safety)
    return action
