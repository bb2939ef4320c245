"""The GPU worker's process state, on one object: one model's batcher, the heartbeat, the replay slots.

A GPU worker is started with WORKER_MODEL=<name> and consumes `infer.<name>` (and its replay queue).
It runs Celery's threads pool, so the model lives in the worker's main process: no fork, so CUDA is
safe, and nothing loads in worker_process_init (celery-notes §5). The runtime is created at worker_ready
(workers/celery_app.py); the model loads in the batcher's owner thread, and /health tells "loading" from
"ready" through the heartbeat.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from workers import gc_freeze, liveness
from workers.gpu.batcher import MicroBatcher
from workers.policies.registry import fingerprint_mode, load_policy, parse_enabled_models, parse_model_options
from workers.settings import Settings, get_settings
from workers.wire import notify

log = logging.getLogger(__name__)
# Replay slices running at once in one worker process. Each holds a task thread for its whole slice; without
# a cap, a few replays could occupy every thread and leave interactive messages unconsumed behind them.
REPLAY_SLOTS_PER_WORKER = 2


def worker_model() -> str | None:
    return os.environ.get("WORKER_MODEL") or None


class GpuRuntime:
    """Everything one GPU worker process holds for its life."""

    def __init__(self, settings: Settings, model: str):
        paths = parse_enabled_models(settings.enabled_models)
        if model not in paths:
            raise RuntimeError(f"WORKER_MODEL={model!r} is not in ENABLED_MODELS ({', '.join(paths)})")
        self.settings, self.model, self.path = settings, model, paths[model]
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self.replay_slots = threading.BoundedSemaphore(REPLAY_SLOTS_PER_WORKER)
        self._stop = threading.Event()
        # Called once, with the reason, when the model fails to load (celery_app stops consuming the queues).
        self._on_failed: list[Callable[[str], None]] = []
        self._failed_lock = threading.Lock()
        self.stopped_consuming: str | None = None
        self.batcher = MicroBatcher(self._load, max_batch_size=settings.batch_max_size,
                                    max_wait_ms=settings.batch_max_wait_ms, name=model,
                                    max_background_per_batch=settings.batch_max_background or None,
                                    hold_for_cadence=settings.batch_hold_for_cadence,
                                    schedule=settings.batch_schedule, margin_ms=settings.batch_deadline_margin_ms)

    def start(self) -> GpuRuntime:
        self.batcher.start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        return self

    def _load(self):
        from workers.policies.devices import resolve_device

        s = self.settings
        if s.torch_cpu_threads > 0 and resolve_device(s.gpu_device).type == "cpu":
            # On a CPU worker the model shares the machine with web and safety processes; torch's default
            # of one thread per core oversubscribes it (measured in docs/benchmarks.md).
            import torch

            torch.set_num_threads(s.torch_cpu_threads)
        policy = load_policy(self.model, self.path, model_dir=s.model_dir, dtype=s.model_dtype, device=s.gpu_device,
                             options=parse_model_options(s.enabled_models)[self.model],
                             fingerprint_dir=s.fingerprint_dir,
                             fingerprints=fingerprint_mode(s.environment, s.allow_unregistered_checkpoints),
                             allow_sim=s.environment == "development" or s.sim_allowed)
        gc_freeze.freeze(f"{self.model} loaded")  # the model's modules and the worker's start-up, for good
        return policy

    def _heartbeat(self) -> None:
        r = notify.client(self.settings.redis_url)
        while not self._stop.is_set():
            b = self.batcher
            if b.state == "failed" and self.stopped_consuming is None:
                self._failed(f"model {self.model} failed to load: {type(b.error).__name__}: {b.error}")
            consuming = self.stopped_consuming is None and liveness.consuming()
            info = {"state": b.state, "stats": b.stats(), "consuming": consuming}
            if b.ready:
                info["spec"] = b.spec.to_dict()
            if b.state == "failed":
                info["error"] = self.stopped_consuming
            try:
                notify.publish_heartbeat(r, self.model, self.hostname, info,
                                         ttl_s=notify.heartbeat_ttl(self.settings.worker_heartbeat_s))
            except Exception:  # Redis blips must not kill the heartbeat thread
                log.warning("heartbeat failed", exc_info=True)
            self._stop.wait(self.settings.worker_heartbeat_s)

    def when_failed(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` once the model has failed to load: now, if it already has. (A missing
        checkpoint fails within milliseconds, possibly before the worker has registered its callback.)"""
        with self._failed_lock:
            self._on_failed.append(callback)
            reason = self.stopped_consuming
        if reason is not None:
            self._call(callback, reason)

    def _failed(self, reason: str) -> None:
        with self._failed_lock:
            self.stopped_consuming = reason
            callbacks = list(self._on_failed)
        log.error("%s; this worker stops consuming its queues", reason)
        for callback in callbacks:
            self._call(callback, reason)

    @staticmethod
    def _call(callback: Callable[[str], None], reason: str) -> None:
        try:
            callback(reason)
        except Exception:
            log.exception("could not stop consuming")

    def drain(self) -> None:
        """SIGTERM: the forward pass in progress finishes; items not started fail with BatcherStopped, and
        their tasks give their messages back to the queue (workers/tasks.py) for another worker."""
        self.batcher.stop(timeout=self.settings.worker_drain_s, drain=False)

    def shutdown(self) -> None:
        """On a warm shutdown: stop the heartbeat and withdraw it at once, so /health stops counting us now."""
        self._stop.set()
        self.batcher.stop(timeout=5)
        try:
            notify.withdraw_heartbeat(notify.client(self.settings.redis_url), self.model, self.hostname)
        except Exception:
            log.warning("could not withdraw the heartbeat", exc_info=True)


_lock = threading.Lock()
_current: GpuRuntime | None = None


def current() -> GpuRuntime:
    """This process's runtime, created and started on first use (at worker_ready in a real worker)."""
    global _current
    with _lock:
        if _current is None:
            model = worker_model()
            if not model:
                raise RuntimeError("WORKER_MODEL is not set: start a GPU worker with WORKER_MODEL=<model name>")
            _current = GpuRuntime(get_settings(), model).start()
        return _current


def preload() -> None:
    """What a GPU worker's boot imports, imported ahead: for a supervisor that forks each worker from one warm
    process (ops/warmstart.py), so a restarted worker goes straight to loading its model. Imports only: no
    thread, no device, no weights (the fork must stay safe for CUDA)."""
    import celery.bin.celery  # noqa: F401  the worker command's own imports

    from workers.policies.registry import import_backends

    import_backends()


def get_batcher() -> MicroBatcher:
    return current().batcher


def shutdown() -> None:
    with _lock:
        if _current is not None:
            _current.shutdown()


def drain() -> None:
    with _lock:
        rt = _current
    if rt is not None:
        rt.drain()
