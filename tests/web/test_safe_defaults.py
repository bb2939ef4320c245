"""Safe defaults: secrets required, health details for operators only, our words in errors, bounded metric
labels, no-store and nosniff on /v1, Swagger UI from the pinned package, Flower refusing to start open."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ops.flower import problems
from tests.conftest import ROOT
from web.app import create_app
from workers.settings import DEV_PEPPER
from workers.store.models import Customer, Job

LEAK = "OperationalError: connection to server at 10.1.2.3, user secret_admin"


def _app(settings, **changes):
    return create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, **changes)})


@pytest.mark.parametrize("pepper,env", [(DEV_PEPPER, "production"), ("", "production"), ("  ", "development")])
def test_web_refuses_default_or_empty_pepper(settings, pepper, env):
    with pytest.raises(RuntimeError, match="API_KEY_PEPPER"):
        _app(settings, api_key_pepper=pepper, environment=env)


def test_development_mode_accepts_the_default_pepper(settings):
    assert _app(settings, api_key_pepper=DEV_PEPPER, environment="development") is not None


def test_public_health_is_booleans_and_operators_get_details(settings):
    app = _app(settings, ops_token="ops-" + uuid.uuid4().hex)
    public = app.test_client().get("/health").get_json()
    assert set(public) == {"status", "database", "redis", "models", "stages"}
    assert all(isinstance(v, bool) for v in (public["database"], public["redis"], *public["models"].values(),
                                             *public["stages"].values()))
    wrong = app.test_client().get("/health", headers={"X-Ops-Token": "nope"}).get_json()
    assert "details" not in wrong
    token = app.config["SETTINGS"].ops_token
    ops = app.test_client().get("/health", headers={"X-Ops-Token": token}).get_json()
    assert {"database", "redis", "models"} <= set(ops["details"])


def test_health_with_database_down_says_false_not_why(settings):
    down = _app(settings, database_url="postgresql+psycopg2://secret_admin@127.0.0.1:1/nowhere")
    resp = down.test_client().get("/health")
    assert resp.status_code == 503 and resp.get_json()["database"] is False
    assert "secret_admin" not in resp.get_data(as_text=True) and "Error" not in resp.get_data(as_text=True)


def test_job_error_shows_our_sentence_not_exception_text(client, make_customer, db_session):
    name, _, headers = make_customer()
    customer = db_session.execute(select(Customer).where(Customer.name == name)).scalar_one()
    now = datetime.now(UTC)
    job = Job(customer_id=customer.id, model="openvla-tiny", state="failed", request_id="req_test_leak",
              request={}, error={"code": "inference_error", "detail": LEAK}, created_at=now, finished_at=now,
              deadline_at=now + timedelta(seconds=30))
    db_session.add(job)
    db_session.commit()
    body = client.get(f"/v1/jobs/{job.id}", headers=headers).get_data(as_text=True)
    assert "10.1.2.3" not in body and "secret_admin" not in body and "inference_error" in body


def test_metric_labels_come_from_fixed_sets(client):
    for method in ("FOOBAR", "X" * 40):
        client.open("/v1/jobs", method=method)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="FOOBAR"' not in text and "X" * 40 not in text
    assert 'method="other"' in text


def test_v1_answers_carry_no_store_and_nosniff(client, make_customer):
    headers = make_customer()[2]
    for resp in (client.get("/v1/usage", headers=headers), client.get("/v1/jobs/nope", headers=headers),
                 client.get("/v1/usage")):
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/health").headers["X-Content-Type-Options"] == "nosniff"


def test_swagger_ui_comes_from_the_pinned_package(client):
    page = client.get("/docs").get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.get_data()) > 100_000
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2fsetup.py").status_code == 404


@pytest.mark.parametrize("value", ["", "admin", ":longenoughpassword", "admin:", "admin:short",
                                   "ops:longenoughpassword,admin:"])
def test_flower_credentials_are_checked(value):
    assert problems(value)


def test_flower_good_credentials():
    assert problems("ops:longenoughpassword") == []


def test_procfile_flower_line_fails_fast_without_credentials():
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("flower:"))
    env = {**os.environ, "FLOWER_BASIC_AUTH": "", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", line.split(":", 1)[1]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "FLOWER_BASIC_AUTH" in proc.stderr
    assert time.monotonic() - started < 10
