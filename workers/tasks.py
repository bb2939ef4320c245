"""Celery tasks: `vla.infer` (on infer.<model>) chained to `vla.safety` (on safety)."""
from __future__ import annotations

from typing import Any

from workers.celery_app import app
from workers.routing import INFER_TASK, REPLAY_TASK, SAFETY_TASK
from workers.settings import get_settings


@app.task(name=INFER_TASK, acks_late=True, reject_on_worker_lost=True)
def infer(job: dict[str, Any]) -> dict[str, Any]:
    from workers.inference import run_inference  # imported here: only GPU workers load torch

    return run_inference(job, get_settings())


@app.task(name=SAFETY_TASK, acks_late=True, reject_on_worker_lost=True)
def safety_check(prev: dict[str, Any], job: dict[str, Any]) -> str:
    from workers.safety_stage import run_safety

    return run_safety(prev, job, get_settings())


@app.task(name=REPLAY_TASK, acks_late=True, reject_on_worker_lost=True)
def replay(msg: dict[str, Any]) -> str:
    """One bounded slice of a replay (workers/replay_driver.py); it enqueues the next slice itself."""
    from workers.replay_driver import run_slice

    return run_slice(msg, get_settings())
