"""Prometheus metrics: request latency histograms, jobs by state, queue depth per queue, ready workers,
reaper actions, and the operator metrics workers and admission control record in Redis (workers/wire/telemetry.py):
latency per model and stage, batch sizes, safety decisions and flags, refusals by reason, jobs finished by state.

The web's own counters and histograms live in prometheus_client (multi-process mode when
PROMETHEUS_MULTIPROC_DIR is set, as under gunicorn with several workers); everything else is read from
PostgreSQL and Redis at scrape time, so every web process reports the same truth.
"""
from __future__ import annotations

import itertools
import os

from flask import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from web.services import catalog, health
from workers.settings import Settings
from workers.store.db import session_factory
from workers.store.models import JOB_STATES, REPLAY_STATES, Job, Replay
from workers.wire import notify, telemetry
from workers.wire.queues import SAFETY_QUEUE, infer_queue

REQUEST_LATENCY = Histogram(
    "vla_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# kombu's Redis transport keeps priority levels in sibling lists named queue + '\x06\x16' + level.
_PRIORITY_SUFFIXES = ("",) + tuple(f"\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9))
QUEUE_DEPTH_READS = len(_PRIORITY_SUFFIXES)  # the replies queue_depth_on adds to a pipeline, to be summed


# Label values come from fixed sets: any other method is "other", so a client cannot mint series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(request: Request, response: Response, seconds: float) -> None:
    route = request.url_rule.rule if request.url_rule else "unmatched"
    method = request.method if request.method in METHODS else "other"
    status = str(response.status_code) if 100 <= response.status_code < 600 else "other"
    REQUEST_LATENCY.labels(method, route, status).observe(seconds)


def queue_depth(r, queue: str) -> int:
    pipe = r.pipeline()
    queue_depth_on(pipe, queue)
    return int(sum(pipe.execute()))


def queue_depth_on(pipe, queue: str) -> None:
    """Add the reads of `queue`'s depth to a pipeline: QUEUE_DEPTH_READS replies, to be summed."""
    for suffix in _PRIORITY_SUFFIXES:
        pipe.llen(queue + suffix)


class _LiveGauges:
    """Scrape-time gauges from the database and Redis."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        jobs = GaugeMetricFamily("vla_jobs", "Jobs by state (created in the last 24 h)", labels=["state"])
        with session_factory(self.settings.database_url)() as s:
            counts = dict(s.execute(select(Job.state, func.count()).where(
                Job.created_at > func.now() - func.make_interval(0, 0, 0, 1)).group_by(Job.state)).all())
            replays = dict(s.execute(select(Replay.state, func.count()).where(
                Replay.created_at > func.now() - func.make_interval(0, 0, 0, 1)).group_by(Replay.state)).all())
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        by_state = GaugeMetricFamily("vla_replays", "Replays by state (created in the last 24 h)", labels=["state"])
        for state in REPLAY_STATES:
            by_state.add_metric([state], replays.get(state, 0))
        yield by_state
        r = notify.client(self.settings.redis_url)
        depth = GaugeMetricFamily("vla_queue_depth", "Messages waiting per queue", labels=["queue"])
        ready = GaugeMetricFamily("vla_workers_ready", "Ready GPU workers per model", labels=["model"])
        for model in catalog.enabled_models(self.settings):
            for q in (infer_queue(model), infer_queue(model, "replay")):
                depth.add_metric([q], queue_depth(r, q))
            ready.add_metric([model], catalog.describe(self.settings, model)["ready_workers"])
        depth.add_metric([SAFETY_QUEUE], queue_depth(r, SAFETY_QUEUE))
        yield depth
        yield ready
        yield _reaper_actions(r)
        yield _stage_workers(self.settings)
        telemetry.flush()  # this process's own observations (submissions, refusals) are in the hash before we read
        yield from telemetry_families(telemetry.read(r), set(catalog.enabled_models(self.settings)))


# (exported name, help, stored metric, label names, histogram buckets or None for a counter)
TELEMETRY = (
    ("vla_inference_stage_seconds", "Job latency per model and stage (queue_wait, batch_wait, the policy's stages, "
     "inference, safety, total)", "stage", ("model", "stage"), telemetry.LATENCY_BUCKETS_S),
    ("vla_batch_size", "Requests per forward pass, per model", "batch", ("model",), telemetry.BATCH_BUCKETS),
    ("vla_safety_decisions", "Safety stage decisions per model (allowed, modified, rejected)", "decision",
     ("model", "decision"), None),
    ("vla_safety_violations", "Actions flagged per model and check that raised the flag", "violation",
     ("model", "check"), None),
    ("vla_requests_refused", "Requests refused by admission control, by reason (telemetry.REASONS)", "refused",
     ("reason",), None),
    ("vla_jobs_finished", "Jobs ended by a worker, per model and final state", "finished", ("model", "state"), None),
    ("vla_jobs_submitted", "Jobs accepted, per model and kind (interactive, replay), from the web and openpi "
     "processes", "submitted", ("model", "kind"), None),
)


def telemetry_families(stored: dict, models: set[str]):
    """Prometheus families from workers/wire/telemetry.py's hash; only enabled models are exported."""
    for name, doc, metric, labels, buckets in TELEMETRY:
        series = {k: v for k, v in stored.get(metric, {}).items() if "model" not in labels or k[0] in models}
        if buckets is None:
            # Every combination of the fixed label sets, zeros included, so rate() works from the first scrape.
            domains = {"model": sorted(models), "decision": telemetry.DECISIONS, "check": telemetry.CHECKS,
                       "reason": telemetry.REASONS, "state": telemetry.FINAL_STATES, "kind": telemetry.KINDS}
            fam = CounterMetricFamily(name, doc, labels=list(labels))
            for values in itertools.product(*(domains[label] for label in labels)):
                fam.add_metric(list(values), series.get(values, {}).get("n", 0.0))
        else:
            fam = HistogramMetricFamily(name, doc, labels=list(labels))
            for values, fields in sorted(series.items()):
                cumulative, total = [], 0.0
                for i, bound in enumerate(buckets):
                    total += fields.get(f"b{i}", 0.0)
                    cumulative.append((repr(float(bound)), total))
                cumulative.append(("+Inf", fields.get("count", 0.0)))
                fam.add_metric(list(values), cumulative, sum_value=fields.get("sum", 0.0))
        yield fam


def _stage_workers(settings: Settings) -> GaugeMetricFamily:
    """Live workers per stage (web/services/health.py): alert when one is 0, as /health turns degraded."""
    # Labelled `service`, not `stage`: `stage` already names the steps of a job in vla_inference_stage_seconds.
    family = GaugeMetricFamily("vla_stage_live_workers", "Workers with a fresh heartbeat that still consume, "
                               "per service (model:<name>, safety, reaper)", labels=["service"])
    for stage, summary in health.stages(settings).items():
        family.add_metric([stage], summary["live_workers"])
    return family


def _reaper_actions(r) -> CounterMetricFamily:
    """What the reaper (ops/reaper.py) did, from its Redis hash: every reaper process adds to the same counters."""
    family = CounterMetricFamily("vla_reaper_actions", "Reaper actions: passes, jobs_republished, jobs_expired "
                                 "(lost), replays_resumed, uploads_deleted, leases_released, errors", labels=["action"])
    actions = notify.read_actions(r)
    for action in ("passes", "jobs_republished", "jobs_expired", "replays_resumed", "uploads_deleted",
                   "leases_released", "errors"):
        family.add_metric([action], actions.get(action, 0))
    return family


def render(settings: Settings) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    live = CollectorRegistry()
    live.register(_LiveGauges(settings))
    return Response(text + generate_latest(live), mimetype=CONTENT_TYPE_LATEST)
