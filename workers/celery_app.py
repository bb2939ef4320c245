"""The Celery application. Tasks are thin: plain data in, a service function out."""
from __future__ import annotations

from celery import Celery, signals

from workers import logs

app = Celery("vlaapi")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    logs.configure()


@signals.worker_ready.connect
def _warm_up(**_: object) -> None:
    # GPU workers start loading their model at once, in the batcher's own thread, so /health can
    # report "loading" and the first job does not pay for the load.
    from workers.gpu import runtime

    if runtime.worker_model():
        runtime.current()


@signals.worker_shutdown.connect
def _shutdown(**_: object) -> None:
    from workers.gpu import runtime

    runtime.shutdown()


@signals.task_prerun.connect
def _bind_request_id(task=None, args=None, kwargs=None, **_: object) -> None:
    job = (args or [None])[-1] if args else None
    if isinstance(job, dict):
        logs.bind(request_id=job.get("request_id"), job_id=job.get("job_id"))


@signals.task_postrun.connect
def _unbind(**_: object) -> None:
    logs.bind(request_id=None, job_id=None)
