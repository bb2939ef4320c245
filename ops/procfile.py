"""The process commands of the stack, shared by `vlaapi dev run` and the integration tests."""
from __future__ import annotations

import shlex

from workers.wire.queues import SAFETY_QUEUE, infer_queue


def gpu_worker_argv(model: str, concurrency: int = 16) -> list[str]:
    """A GPU worker for one model: threads pool (the batcher's thread owns the model), both its queues."""
    queues = f"{infer_queue(model)},{infer_queue(model, 'replay')}"
    return ["celery", "-A", "workers.celery_app", "worker", "-P", "threads", "-c", str(concurrency),
            "-Q", queues, "-n", f"gpu-{model}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]


def safety_worker_argv(concurrency: int = 8) -> list[str]:
    return ["celery", "-A", "workers.celery_app", "worker", "-P", "threads", "-c", str(concurrency),
            "-Q", SAFETY_QUEUE, "-n", "safety@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]


SUPERVISE = "python -m ops.supervise --"


def expand(base_procfile: str, models: list[str], *, supervised: bool = True) -> str:
    """The Procfile with one GPU worker line per enabled model (honcho has no templating), each command
    wrapped in ops/supervise.py so a process that exits (a worker's watchdog, a crash) is started again
    instead of honcho stopping the whole stack."""
    lines = [ln for ln in base_procfile.splitlines() if ln.strip() and not ln.startswith("#")]
    for model in models:
        name = "gpu_" + "".join(c if c.isalnum() else "_" for c in model)
        # `python -m celery`, so its supervisor may start it warm (ops/warmstart.py)
        cmd = " ".join(shlex.quote(a) for a in ["python", "-m", *gpu_worker_argv(model)])
        lines.append(f"{name}: env WORKER_MODEL={shlex.quote(model)} {cmd}")
    if supervised:
        lines = [_supervised(ln) for ln in lines]
    return "\n".join(lines) + "\n"


def _supervised(line: str) -> str:
    name, _, cmd = line.partition(":")
    return f"{name}: {SUPERVISE} {cmd.strip()}"
