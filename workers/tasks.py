"""Every Celery task, and the only place tasks are sent. A leaf: nothing in `workers` imports it back.

Tasks are thin: plain data in, a stage function (workers/stages/) out, testable without Celery. Each has an
explicit name and time limits. The web sends through `send_job` and `start_replay`; a replay slice's
follow-up message comes back from its stage and is sent here, so the driver never needs this module.
"""
from __future__ import annotations

from typing import Any

from celery import chain
from celery.exceptions import Reject

from workers.celery_app import app
from workers.settings import get_settings
from workers.wire.queues import INFER_TASK, REPLAY_TASK, SAFETY_TASK, TIME_LIMITS


@app.task(name=INFER_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[INFER_TASK])
def infer(job: dict[str, Any]) -> dict[str, Any]:
    from workers.stages.inference import run_inference  # imported here: only GPU workers load torch
    from workers.stages.retry import HandBack

    try:
        return run_inference(job, get_settings())
    except HandBack:
        # Not started and this worker is draining: back to the queue (acks_late), for another worker.
        raise Reject("worker draining", requeue=True) from None


@app.task(name=SAFETY_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[SAFETY_TASK])
def safety_check(prev: dict[str, Any], job: dict[str, Any]) -> str:
    from workers.stages.safety import run_safety

    return run_safety(prev, job, get_settings())


@app.task(name=REPLAY_TASK, acks_late=True, reject_on_worker_lost=True, **TIME_LIMITS[REPLAY_TASK])
def replay(msg: dict[str, Any]) -> str:
    """One bounded slice of a replay (workers/stages/replay.py); then its follow-up message, if any."""
    from workers.stages.replay import run_slice

    outcome, follow = run_slice(msg, get_settings())
    if follow is not None:
        start_replay(follow)
    return outcome


def send_job(payload: dict[str, Any], safety_job: dict[str, Any]) -> None:
    """Publish the chain `infer | safety` for one job row that is already committed."""
    # No Celery `expires`: an expired message would be dropped without touching the job row. The worker
    # checks the deadline itself and ends the job `expired`, so the client always learns the outcome.
    # argsrepr: Flower and the worker logs show the job, not kilobytes of base64 image (and Celery skips
    # computing a repr of them on every publish).
    summary = f"job={payload['job_id']} model={payload['model']}"
    chain(infer.s(payload).set(argsrepr=summary), safety_check.s(safety_job).set(argsrepr=summary)).apply_async()


def start_replay(msg: dict[str, Any]) -> None:
    """Publish one replay slice message (the first, or a follow-up)."""
    replay.apply_async((msg,), argsrepr=f"replay={msg['replay_id']} seq={msg['seq']}")
