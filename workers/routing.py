"""Queue names and the Celery router: `infer.<model>` per model, `infer.<model>.replay`, and `safety`."""
from __future__ import annotations

INFER_TASK = "vla.infer"
SAFETY_TASK = "vla.safety"
REPLAY_TASK = "vla.replay"
SAFETY_QUEUE = "safety"


def infer_queue(model: str, kind: str = "interactive") -> str:
    return f"infer.{model}.replay" if kind == "replay" else f"infer.{model}"


def route_task(name, args, kwargs, options, task=None, **kw):
    """Route by the job's model so each GPU worker consumes only its own model's queue."""
    if name == INFER_TASK:
        job = (args or [None])[0] or kwargs.get("job") or {}
        return {"queue": infer_queue(job["model"], job.get("kind", "interactive"))}
    if name == REPLAY_TASK:  # a replay slice runs on its model's GPU worker, behind interactive traffic
        return {"queue": infer_queue(((args or [None])[0] or kwargs.get("msg") or {})["model"], "replay")}
    if name == SAFETY_TASK:
        return {"queue": SAFETY_QUEUE}
    return None
