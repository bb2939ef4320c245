"""Prometheus metrics: request latency histograms, jobs by state, queue depth per queue, ready workers,
reaper actions.

Counters and histograms live in prometheus_client (multi-process mode when PROMETHEUS_MULTIPROC_DIR is
set, as under gunicorn with several workers); the gauges are read from PostgreSQL and Redis at scrape time
so every web process reports the same truth.
"""
from __future__ import annotations

import os

from flask import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from web.services import catalog
from workers.settings import Settings
from workers.store.db import session_factory
from workers.store.models import JOB_STATES, REPLAY_STATES, Job, Replay
from workers.wire import notify
from workers.wire.queues import SAFETY_QUEUE, infer_queue

REQUEST_LATENCY = Histogram(
    "vla_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOBS_SUBMITTED = Counter("vla_jobs_submitted", "Jobs accepted, by model and kind", ["model", "kind"])
REFUSED = Counter("vla_requests_refused", "Requests refused by admission control", ["reason"])
# kombu's Redis transport keeps priority levels in sibling lists named queue + '\x06\x16' + level.
_PRIORITY_SUFFIXES = ("",) + tuple(f"\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9))


def observe_request(request: Request, response: Response, seconds: float) -> None:
    route = request.url_rule.rule if request.url_rule else "unmatched"
    REQUEST_LATENCY.labels(request.method, route, str(response.status_code)).observe(seconds)


def queue_depth(r, queue: str) -> int:
    pipe = r.pipeline()
    for suffix in _PRIORITY_SUFFIXES:
        pipe.llen(queue + suffix)
    return int(sum(pipe.execute()))


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


def _reaper_actions(r) -> CounterMetricFamily:
    """What the reaper (ops/reaper.py) did, from its Redis hash: every reaper process adds to the same counters."""
    family = CounterMetricFamily("vla_reaper_actions", "Reaper actions: passes, jobs_expired (lost), "
                                 "replays_resumed, uploads_deleted, leases_released, errors", labels=["action"])
    actions = notify.read_actions(r)
    for action in ("passes", "jobs_expired", "replays_resumed", "uploads_deleted", "leases_released", "errors"):
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
