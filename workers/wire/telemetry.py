"""Operator metrics that span processes and machines, kept in Redis and exported by the web's /metrics.

Why Redis: GPU and safety workers are separate processes, often on other machines, and the openpi process
is another; prometheus_client's multiprocess mode only spans one machine's processes and its files. Every
process here already talks to Redis, so each observation is a few HINCRBY/HINCRBYFLOAT calls in one
pipeline (one round trip, off the model's thread) on one hash, and any web process exports the same totals
at scrape time. Counters survive worker restarts; a Redis flush resets them, which Prometheus handles as a
counter reset. Job rows were the other option: exact, but a scrape would scan them, and refusals (no job)
would need a table of their own.

Every label value comes from a fixed set (models from ENABLED_MODELS, the stage names, decisions, checks,
reasons below), so a customer's input can never add a series. Field layout: "metric|label1|label2|suffix".
"""
from __future__ import annotations

import bisect
import logging
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
REASONS = ("rate", "quota", "in_flight", "queue_full", "replay_concurrency", "replay_steps")
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


def _send(r: redis.Redis, fill) -> None:
    """Metrics never fail a job: a Redis error here is logged and the observation dropped."""
    try:
        pipe = r.pipeline(transaction=False)
        fill(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics not recorded: %s", type(exc).__name__)


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
