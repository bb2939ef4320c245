"""Operator metrics that span processes and machines, kept in Redis and exported by the web's /metrics.

Why Redis: GPU and safety workers are separate processes, often on other machines, and the openpi process is
another; prometheus_client's multiprocess mode only spans one machine's processes and its files. Every process
here already talks to Redis, so each observation is a few HINCRBY/HINCRBYFLOAT calls on one hash, sent in a
pipeline by a background thread (never on a request's or a job's path), and any web process exports the same
totals at scrape time. Counters survive worker restarts; a Redis flush resets them, which Prometheus handles
as a counter reset. Job rows were the other option: exact, but a scrape would scan them, and refusals (no job)
would need a table of their own.

Every label value comes from a fixed set (models from ENABLED_MODELS, the stage names, decisions, checks,
reasons below), so a customer's input can never add a series. Field layout: "metric|label1|label2|suffix".
"""
from __future__ import annotations

import bisect
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from safety.checks import RULE_CHECKS

log = logging.getLogger(__name__)
KEY = "vla:metrics"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Stages of one job: queue_wait (accepted -> a worker picked it up), batch_wait (inside the worker's
# micro-batcher), the policy's own stages, inference (the worker's whole call), safety, total (accepted ->
# final state).
STAGES = ("queue_wait", "batch_wait", "preprocess", "vision", "prefill", "decode", "flow", "inference", "safety",
          "total")
_MODEL_STAGES = {"queue_ms": "batch_wait", "preprocess": "preprocess", "vision": "vision", "prefill": "prefill",
                 "decode": "decode", "flow": "flow"}
DECISIONS = ("allowed", "modified", "rejected")
# Violations are counted by the check that raised them (the codes carry axis names and dimensions);
# alignment plugins are named by deployments, so they are counted together.
CHECKS = (*(name for name, _ in RULE_CHECKS), "action_shape", "finite_values", "shield", "alignment")
REASONS = ("rate", "quota", "in_flight", "queue_full", "replay_concurrency", "replay_steps", "deadline")
FINAL_STATES = ("succeeded", "failed", "expired", "canceled")
KINDS = ("interactive", "replay")

HISTOGRAMS = {"stage": LATENCY_BUCKETS_S, "batch": BATCH_BUCKETS}


def _observe(pipe: Any, metric: str, labels: Iterable[str], value: float) -> None:
    prefix = "|".join((metric, *labels))
    idx = bisect.bisect_left(HISTOGRAMS[metric], value)  # bucket `le` is the first bound >= value
    pipe.hincrby(KEY, f"{prefix}|b{idx}", 1)
    pipe.hincrby(KEY, f"{prefix}|count", 1)
    pipe.hincrbyfloat(KEY, f"{prefix}|sum", value)


def _count(pipe: Any, metric: str, labels: Iterable[str], n: int = 1) -> None:
    pipe.hincrby(KEY, "|".join((metric, *labels, "n")), n)


class _Sum:
    """Stands in for a pipeline while observations are gathered: HINCRBY / HINCRBYFLOAT on the same field add
    up here, so a burst of N jobs costs Redis one command per field instead of N."""

    def __init__(self) -> None:
        self.ints: dict[tuple[str, str], int] = {}
        self.floats: dict[tuple[str, str], float] = {}

    def hincrby(self, key: str, field: str, n: int) -> None:
        self.ints[key, field] = self.ints.get((key, field), 0) + n

    def hincrbyfloat(self, key: str, field: str, v: float) -> None:
        self.floats[key, field] = self.floats.get((key, field), 0.0) + v

    def replay(self, pipe: Any) -> None:
        for (key, field), n in self.ints.items():
            pipe.hincrby(key, field, n)
        for (key, field), v in self.floats.items():
            pipe.hincrbyfloat(key, field, v)


class _Sender:
    """Sends observations from one background thread per process, so metrics never add a Redis round trip to a
    request or a job (the hot path's cost is an append to a queue). The thread gathers what arrives within
    COALESCE_S of the first observation, sums it per field, and sends one pipeline per Redis client: under
    load that is a few dozen commands a second instead of dozens per job, for Redis and for this process.
    `flush` sends at once (a scrape, a test). Bounded: while Redis is unreachable, observations past
    MAX_PENDING are dropped rather than held."""

    MAX_PENDING = 10_000
    COALESCE_S = 0.25

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._now = threading.Event()
        self._pending = 0
        threading.Thread(target=self._run, name="telemetry", daemon=True).start()

    def put(self, r: redis.Redis, fill) -> None:
        with self._cond:
            if self._pending >= self.MAX_PENDING:
                return
            self._pending += 1
        self._queue.put((r, fill))

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far has been sent (or dropped); False on timeout."""
        self._now.set()
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            self._now.wait(self.COALESCE_S)
            self._now.clear()
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            clients: dict[int, tuple[redis.Redis, list]] = {}
            for r, fill in batch:
                clients.setdefault(id(r), (r, []))[1].append(fill)
            for r, fills in clients.values():
                _execute(r, fills)
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()


def _execute(r: redis.Redis, fills: list) -> None:
    """Metrics never fail anything: a Redis error here is logged and the observations dropped."""
    try:
        total = _Sum()
        for fill in fills:
            fill(total)
        pipe = r.pipeline(transaction=False)
        total.replay(pipe)
        pipe.execute()
    except Exception as exc:
        log.warning("metrics not recorded: %s", type(exc).__name__)


_lock = threading.Lock()
_sender: _Sender | None = None


def _send(r: redis.Redis, fill) -> None:
    global _sender
    with _lock:
        if _sender is None or _sender.pid != os.getpid():  # a forked child needs a thread of its own
            _sender = _Sender()
        sender = _sender
    sender.put(r, fill)


def flush(timeout: float = 2.0) -> bool:
    """Send what this process has queued; /metrics calls it so a scrape sees this process's own observations."""
    with _lock:
        sender = _sender if _sender is not None and _sender.pid == os.getpid() else None
    return True if sender is None else sender.flush(timeout)


def inference_done(r: redis.Redis, model: str, job: dict[str, Any], timings_ms: dict[str, float],
                   inference_ms: float, batch_size: int | None, first_in_batch: bool) -> None:
    """On the GPU worker, after its forward pass: queue wait, the policy's stages, the batch it ran in."""
    def fill(pipe):
        created = job.get("created_at")
        if created is not None:
            _observe(pipe, "stage", (model, "queue_wait"), max(0.0, job.get("claimed_at", time.time()) - created))
        for key, stage in _MODEL_STAGES.items():
            if isinstance(timings_ms.get(key), int | float):
                _observe(pipe, "stage", (model, stage), timings_ms[key] / 1000)
        _observe(pipe, "stage", (model, "inference"), inference_ms / 1000)
        if batch_size and first_in_batch:  # one observation per forward pass, not per request
            _observe(pipe, "batch", (model,), batch_size)
    _send(r, fill)


def job_finished(r: redis.Redis, job: dict[str, Any], state: str, result: dict[str, Any] | None = None,
                 safety_ms: float | None = None) -> None:
    """Where a worker ends a job: its final state, total latency, and the safety stage's decision."""
    model = job.get("model", "")

    def fill(pipe):
        _count(pipe, "finished", (model, state if state in FINAL_STATES else "failed"))
        if job.get("created_at") is not None:
            _observe(pipe, "stage", (model, "total"), max(0.0, time.time() - job["created_at"]))
        if safety_ms is not None:
            _observe(pipe, "stage", (model, "safety"), safety_ms / 1000)
        safety = (result or {}).get("safety") or {}
        if safety.get("decision") in DECISIONS:
            _count(pipe, "decision", (model, safety["decision"]))
        for check in {v.get("check") for v in safety.get("violations") or [] if isinstance(v, dict)}:
            _count(pipe, "violation", (model, check if check in CHECKS else "alignment"))
    _send(r, fill)


def refused(r: redis.Redis, reason: str) -> None:
    """Admission control refused a request (web and openpi processes)."""
    _send(r, lambda pipe: _count(pipe, "refused", (reason if reason in REASONS else "rate",)))


def submitted(r: redis.Redis, model: str, kind: str) -> None:
    """A job was admitted and enqueued (web and openpi processes)."""
    _send(r, lambda pipe: _count(pipe, "submitted", (model, kind if kind in KINDS else "interactive")))


def read(r: redis.Redis) -> dict[str, dict[tuple[str, ...], dict[str, float]]]:
    """{metric: {labels: {suffix: value}}} from the hash, for the exporter."""
    out: dict[str, dict[tuple[str, ...], dict[str, float]]] = {}
    for raw_field, raw_value in r.hgetall(KEY).items():
        parts = raw_field.decode().split("|")
        if len(parts) < 2:
            continue
        metric, labels, suffix = parts[0], tuple(parts[1:-1]), parts[-1]
        out.setdefault(metric, {}).setdefault(labels, {})[suffix] = float(raw_value)
    return out
