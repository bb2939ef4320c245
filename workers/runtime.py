"""The GPU worker's in-process state: one model, owned by the micro-batcher's thread, and a heartbeat.

A GPU worker is started with WORKER_MODEL=<name> and consumes `infer.<name>` (and its replay queue).
It runs Celery's threads pool, so the model lives in the worker's main process: no fork, so CUDA is
safe, and nothing loads in worker_process_init (celery-notes §5). The model loads in the batcher's
owner thread once the worker is ready; /health tells "loading" from "ready" through the heartbeat.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from workers import notify
from workers.batcher import MicroBatcher
from workers.policies.registry import load_policy, parse_enabled_models, parse_model_options
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_batcher: MicroBatcher | None = None
_stop = threading.Event()


def worker_model() -> str | None:
    return os.environ.get("WORKER_MODEL") or None


def get_batcher() -> MicroBatcher:
    """The process's batcher, started on first use (normally at worker_ready)."""
    global _batcher
    with _lock:
        if _batcher is None:
            _batcher = _start(get_settings(), worker_model())
        return _batcher


def _start(settings: Settings, model: str | None) -> MicroBatcher:
    if not model:
        raise RuntimeError("WORKER_MODEL is not set: start a GPU worker with WORKER_MODEL=<model name>")
    paths = parse_enabled_models(settings.enabled_models)
    if model not in paths:
        raise RuntimeError(f"WORKER_MODEL={model!r} is not in ENABLED_MODELS ({', '.join(paths)})")

    def loader():
        from workers.policies.devices import resolve_device

        if settings.torch_cpu_threads > 0 and resolve_device(settings.gpu_device).type == "cpu":
            # On a CPU worker the model shares the machine with web and safety processes; torch's default
            # of one thread per core oversubscribes it (measured in docs/benchmarks.md).
            import torch

            torch.set_num_threads(settings.torch_cpu_threads)
        return load_policy(model, paths[model], model_dir=settings.model_dir, dtype=settings.model_dtype,
                           device=settings.gpu_device, options=parse_model_options(settings.enabled_models)[model])

    batcher = MicroBatcher(loader, max_batch_size=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms,
                           name=model, max_background_per_batch=settings.batch_max_background or None)
    batcher.start()
    threading.Thread(target=_heartbeat, args=(settings, model, batcher), name="heartbeat", daemon=True).start()
    return batcher


def _hostname() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _heartbeat(settings: Settings, model: str, batcher: MicroBatcher) -> None:
    r = notify.client(settings.redis_url)
    hostname = _hostname()
    while not _stop.is_set():
        info = {"state": batcher.state, "stats": batcher.stats()}
        if batcher.ready:
            info["spec"] = batcher.spec.to_dict()
        if batcher.state == "failed":
            info["error"] = str(batcher.error)
        try:
            notify.publish_heartbeat(r, model, hostname, info, ttl_s=settings.worker_heartbeat_s * 3)
        except Exception:  # Redis blips must not kill the heartbeat thread
            log.warning("heartbeat failed", exc_info=True)
        _stop.wait(settings.worker_heartbeat_s)


def shutdown() -> None:
    """On a warm shutdown: stop the heartbeat and withdraw it at once, so /health stops counting us now."""
    _stop.set()
    if _batcher is not None:
        _batcher.stop(timeout=5)
        settings, model = get_settings(), worker_model()
        if model:
            try:
                notify.client(settings.redis_url).delete(notify.heartbeat_key(model, _hostname()))
            except Exception:
                log.warning("could not withdraw the heartbeat", exc_info=True)
