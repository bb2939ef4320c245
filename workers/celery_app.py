"""The Celery application. Tasks are thin: plain data in, a service function out."""
from __future__ import annotations

import threading

from celery import Celery, signals

from workers import gc_freeze, logs

app = Celery("vlaapi")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    logs.configure()


@signals.worker_ready.connect
def _warm_up(sender=None, **_: object) -> None:
    """Start the watchdog; GPU workers also start loading their model at once, in the batcher's own thread,
    so /health can report "loading" and the first job does not pay for the load."""
    from workers import liveness
    from workers.gpu import runtime
    from workers.settings import get_settings

    model = runtime.worker_model()
    queues = _consumed_queues()
    stage = None if model else ("safety" if "safety" in queues else None)
    liveness.install(liveness.Watchdog(app, sender.hostname, get_settings(), stage=stage))
    if not model:  # a GPU worker freezes once its model has loaded (workers/gpu/runtime.py)
        gc_freeze.freeze(f"{sender.hostname} ready")
    if model:
        # In a thread of its own: the cancel is a control message the consumer thread itself must answer, and
        # this callback may run on that very thread (worker_ready), where waiting for the answer would block it.
        runtime.current().when_failed(lambda reason: threading.Thread(
            target=_stop_consuming, args=(sender.hostname, queues, reason), name="stop-consuming", daemon=True).start())


def _consumed_queues() -> list[str]:
    return sorted(app.amqp.queues.consume_from or {})


def _stop_consuming(nodename: str, queues: list[str], reason: str) -> None:
    """A worker whose model failed to load must not take jobs only to fail them: cancel its own consumers
    (through the consumer's remote control, which runs on the consumer's thread). It stays up, reporting why."""
    for _attempt in range(3):  # a control message can be missed (e.g. during start-up): check, and ask again
        for queue in queues:
            app.control.cancel_consumer(queue, destination=[nodename], reply=True, timeout=5.0)
        active = (app.control.inspect(destination=[nodename], timeout=5.0).active_queues() or {}).get(nodename)
        if active is not None and not {q["name"] for q in active} & set(queues):
            return


@signals.worker_shutting_down.connect
def _draining(**_: object) -> None:
    # Runs inside the SIGTERM handler: hand the work to a thread, never block here.
    threading.Thread(target=_drain, name="drain", daemon=True).start()


def _drain() -> None:
    """Graceful drain: the watchdog stops counting (consumption stops on purpose now); the batch in its
    forward pass finishes, and jobs not started go back to the queue (workers/gpu/runtime.py drain)."""
    from workers import liveness
    from workers.gpu import runtime

    watchdog = liveness.current()
    if watchdog is not None:
        watchdog.stop()
    runtime.drain()


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
