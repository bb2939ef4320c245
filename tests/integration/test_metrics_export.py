"""Operator metrics recorded by real workers and admission control in Redis, exported by the web's /metrics;
the Grafana dashboard and the Prometheus example under ops/monitoring query only what is exported."""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import request_body
from web.accounts import service
from workers.store.db import session_scope
from workers.store.models import Tier
from workers.wire import telemetry

MONITORING = Path(__file__).resolve().parents[2] / "ops" / "monitoring"
FIXED = {"stage": set(telemetry.STAGES), "decision": set(telemetry.DECISIONS), "check": set(telemetry.CHECKS),
         "reason": set(telemetry.REASONS), "kind": set(telemetry.KINDS),
         "state": set(telemetry.FINAL_STATES) | {"queued", "running"}}


def _samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _refuse_once(client, settings) -> None:
    tier = f"t-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.database_url) as s:
        s.add(Tier(name=tier, requests_per_minute=1))
        s.flush()
        _, key = service.create_key(s, service.create_customer(s, f"c-{tier}", tier), settings.api_key_pepper)
    headers = {"Authorization": f"Bearer {key}"}
    client.post("/v1/inference", json=request_body(), headers=headers)
    assert client.post("/v1/inference", json=request_body(), headers=headers).status_code == 429


def test_workers_and_admission_record_what_operators_need(client, headers, workers, settings):
    before = _samples(client)
    resp = client.post("/v1/inference", json=request_body(), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    decision = resp.get_json()["safety"]["decision"]
    _refuse_once(client, settings)
    m = "openvla-tiny"
    # The workers send their observations in batches (within telemetry.COALESCE_S), so a scrape right after a
    # job may come a moment before them: wait for the job's final count, as a second scrape would see it.
    def grew(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    end = time.monotonic() + 10
    while True:
        after = _samples(client)
        if (grew("vla_jobs_finished_total", model=m, state="succeeded") >= 2 and
                grew("vla_inference_stage_seconds_count", model=m, stage="inference") >= 2) or time.monotonic() > end:
            break
        time.sleep(0.1)

    for stage in ("queue_wait", "batch_wait", "vision", "prefill", "decode", "inference", "safety", "total"):
        assert grew("vla_inference_stage_seconds_count", model=m, stage=stage) >= 1, stage
        assert _value(after, "vla_inference_stage_seconds_bucket", model=m, stage=stage, le="+Inf") == \
            _value(after, "vla_inference_stage_seconds_count", model=m, stage=stage)
    assert grew("vla_batch_size_count", model=m) >= 1 and _value(after, "vla_batch_size_sum", model=m) >= 1
    assert grew("vla_safety_decisions_total", model=m, decision=decision) >= 1
    assert grew("vla_jobs_finished_total", model=m, state="succeeded") >= 2
    assert grew("vla_jobs_submitted_total", model=m, kind="interactive") >= 2
    assert grew("vla_requests_refused_total", reason="rate") == 1
    assert _value(after, "vla_requests_refused_total", reason="queue_full") >= 0  # zero-initialised series
    for (_, labels), _v in after.items():  # every label value comes from a fixed set
        for k, v in labels:
            assert k not in FIXED or v in FIXED[k], (k, v)


def test_every_dashboard_query_names_an_exported_metric(client, headers, workers):
    assert client.post("/v1/inference", json=request_body(), headers=headers).status_code == 200
    exported = {name for name, _ in _samples(client)}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    assert len(exprs) >= 10
    for expr in exprs:
        names = set(re.findall(r"\bvla_[a-z_]+", expr))
        assert names, expr
        assert names <= exported, f"{sorted(names - exported)} in {expr!r} is not exported"
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    web = next(j for j in scrape["scrape_configs"] if j["job_name"] == "vlaapi-web")
    assert web["metrics_path"] == "/metrics" and client.get(web["metrics_path"]).status_code == 200
