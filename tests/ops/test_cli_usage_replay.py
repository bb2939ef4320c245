"""`vlaapi usage CUSTOMER` against the real database and Redis, and how `vlaapi replay` finds the stack and
its key (or says how to get one)."""
from __future__ import annotations

import json
import socket
import uuid

from click.testing import CliRunner

from ops import stack
from ops.cli import main
from web.accounts import service
from web.ratelimit.decision import Limits
from web.ratelimit.limiter import RateLimiter
from workers.store.db import session_scope
from workers.store.models import UsageRecord


def _invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_usage_shows_the_quota_counters_and_finished_jobs(settings, make_customer, redis_client):
    name, _, _ = make_customer("pro")
    with session_scope(settings.database_url) as s:
        customer = service.get_customer(s, name)
        cid = customer.id
        for state, latency in (("succeeded", 40.0), ("succeeded", 60.0), ("failed", None)):
            s.add(UsageRecord(job_id=uuid.uuid4(), customer_id=cid, model="openvla-tiny", kind="interactive",
                              final_state=state, total_latency_ms=latency))
    # What the web does when it admits a request: one unit on the customer's counters.
    RateLimiter(redis_client).hit(str(cid), Limits(per_minute=600, per_day=100000, per_month=1000000))
    result = _invoke("usage", name, "--json", env={"DATABASE_URL": settings.database_url})
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["tier"] == "pro" and body["now"]["requests_today"] == 1
    rows = {(r["model"], r["state"]): r for r in body["finished_jobs"]}
    assert rows[("openvla-tiny", "succeeded")]["jobs"] == 2
    assert rows[("openvla-tiny", "succeeded")]["mean_latency_ms"] == 50.0
    assert rows[("openvla-tiny", "failed")]["jobs"] == 1
    text = _invoke("usage", name, env={"DATABASE_URL": settings.database_url}).output
    assert f"{name} (tier pro)" in text and "today" in text and "openvla-tiny" in text


def test_usage_of_an_unknown_customer_says_so(settings):
    result = _invoke("usage", "nobody-" + uuid.uuid4().hex[:6], env={"DATABASE_URL": settings.database_url})
    assert result.exit_code == 1
    assert "nobody-" in result.output and "Traceback" not in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replay_without_a_key_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "DATA", tmp_path)  # no `make run` stack recorded here
    result = _invoke("replay", "results", str(uuid.uuid4()), env={"VLA_API_KEY": None, "VLA_API_URL": None})
    assert result.exit_code == 2
    assert "VLA_API_KEY" in result.output and "vlaapi keys create" in result.output


def test_replay_finds_the_running_stack_and_its_demo_key(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "DATA", tmp_path)
    port = _closed_port()
    (tmp_path / stack.STATE_NAME).write_text(json.dumps({"web": f"http://0.0.0.0:{port}", "demo_key": "vla_live_x"}))
    result = _invoke("replay", "results", str(uuid.uuid4()), env={"VLA_API_KEY": None, "VLA_API_URL": None})
    # The recorded web (on loopback) was called with a key: it is simply not running.
    assert result.exit_code == 1
    assert f"cannot reach http://127.0.0.1:{port}" in result.output


def test_replay_environment_overrides_the_stack(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "DATA", tmp_path)
    (tmp_path / stack.STATE_NAME).write_text(json.dumps({"web": "http://127.0.0.1:1", "demo_key": "vla_live_x"}))
    port = _closed_port()
    result = _invoke("replay", "results", str(uuid.uuid4()),
                     env={"VLA_API_URL": f"http://127.0.0.1:{port}", "VLA_API_KEY": "vla_live_y"})
    assert f"cannot reach http://127.0.0.1:{port}" in result.output
