"""Queue names and the Celery router: `infer.<model>` per model, `infer.<model>.replay`, and `safety`."""
from __future__ import annotations

INFER_TASK = "vla.infer"
SAFETY_TASK = "vla.safety"
REPLAY_TASK = "vla.replay"
SAFETY_QUEUE = "safety"

# Explicit limits per task (soft raises inside the task, hard kills it). A job's deadline is capped at
# MAX_DEADLINE_MS (5 min by default) and the stages stop at it, so these only catch a hung task; they stay
# under the broker's visibility timeout (600 s) so a message is never redelivered while it still runs.
# Celery enforces them in the prefork pool; in the threads pool the deadlines are what bound a task.
TIME_LIMITS = {
    INFER_TASK: {"soft_time_limit": 330, "time_limit": 360},
    SAFETY_TASK: {"soft_time_limit": 60, "time_limit": 90},
    REPLAY_TASK: {"soft_time_limit": 240, "time_limit": 270},  # a slice hands on after at most 30 s
}
# A replay's in-flight slot, renewed by every slice; it frees itself if every slice dies.
REPLAY_INFLIGHT_TTL_S = 300.0
REPLAY_SLICE_MAX_S = 30.0


def replay_slice_s(visibility_timeout_s: float) -> float:
    """How long one replay slice runs before it hands on (the driver) and so how soon a stall shows (the reaper).

    A third of the visibility timeout: the broker must not redeliver a slice that is still running.
    """
    return max(0.5, min(REPLAY_SLICE_MAX_S, visibility_timeout_s / 3.0))


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
