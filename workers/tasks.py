"""Every Celery task, and the only place tasks are sent. A leaf: nothing in `workers` imports it back.

Tasks are thin: plain data in, a stage function (workers/stages/) out, testable without Celery. Each has an
explicit name and time limits. The web sends through `send_job` and `start_replay`; a replay slice's
follow-up message comes back from its stage and is sent here, so the driver never needs this module.
"""
from __future__ import annotations

import time
from typing import Any

from celery.exceptions import Reject

from workers.celery_app import app
from workers.settings import get_settings
from workers.wire.queues import INFER_TASK, REPLAY_SLICE_MAX_S, REPLAY_TASK, SAFETY_TASK, TIME_LIMITS

# Each publish of a step tries the broker at most three times in ~0.3 s; the caller's own loop
# (workers/stages/handoff.py) retries past that until the job's deadline, so a refused publish costs the job at
# most this much time past its deadline, not Celery's default retry of about a second.
_STEP_PUBLISH = {"retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.1,
                                                  "interval_max": 0.2}}


@app.task(name=INFER_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[INFER_TASK])
def infer(job: dict[str, Any], safety_job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inference, then the hand-off to safety (published here, retried until the deadline). A message without
    `safety_job` (sent as a Celery chain before the explicit hand-off) is continued by Celery's chain."""
    from workers.stages.inference import run_inference  # imported here: only GPU workers load torch
    from workers.stages.retry import HandBack

    settings = get_settings()
    then = None if safety_job is None else (lambda prev: _hand_off(prev, safety_job, settings))
    try:
        return run_inference(job, settings, then)
    except HandBack:
        # Not started and this worker is draining: back to the queue (acks_late), for another worker.
        raise Reject("worker draining", requeue=True) from None


def _hand_off(prev: dict[str, Any], safety_job: dict[str, Any], settings: Any) -> None:
    from workers.stages.handoff import publish_until_deadline

    summary = f"job={safety_job['job_id']} model={safety_job.get('model')}"
    publish_until_deadline(lambda: safety_check.apply_async((prev, safety_job), argsrepr=summary, **_STEP_PUBLISH),
                           safety_job, settings, what="hand off to safety")


@app.task(name=SAFETY_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[SAFETY_TASK])
def safety_check(prev: dict[str, Any], job: dict[str, Any]) -> str:
    from workers.stages.safety import run_safety

    return run_safety(prev, job, get_settings())


@app.task(name=REPLAY_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[REPLAY_TASK])
def replay(msg: dict[str, Any]) -> str:
    """One bounded slice of a replay (workers/stages/replay.py); then its follow-up message, if any."""
    from workers.stages.replay import run_slice
    from workers.stages.retry import retry_transient

    outcome, follow = run_slice(msg, get_settings())
    if follow is not None:
        # A replay has no deadline: its follow-up is retried for a slice's length, after which the reaper
        # resumes the stalled replay from its stored rows.
        retry_transient(lambda: start_replay(follow), time.time() + REPLAY_SLICE_MAX_S, what="hand on a replay")
    return outcome


def send_job(payload: dict[str, Any], safety_job: dict[str, Any]) -> None:
    """Publish the job's first step for a row that is already committed; the GPU worker hands it to safety."""
    # No Celery `expires`: an expired message would be dropped without touching the job row. The worker
    # checks the deadline itself and ends the job `expired`, so the client always learns the outcome.
    # argsrepr: Flower and the worker logs show the job, not kilobytes of base64 image (and Celery skips
    # computing a repr of them on every publish).
    summary = f"job={payload['job_id']} model={payload['model']}"
    infer.apply_async((payload, safety_job), argsrepr=summary)


def broker_redis_url() -> str:
    """The Redis that task messages go to. A job's images wait there, beside its message (workers/wire/frames.py),
    where the GPU worker that receives the message reads them; it is REDIS_URL, unless a test splits the two."""
    return str(app.conf.broker_url)


def start_replay(msg: dict[str, Any]) -> None:
    """Publish one replay slice message (the first, or a follow-up)."""
    replay.apply_async((msg,), argsrepr=f"replay={msg['replay_id']} seq={msg['seq']}")
