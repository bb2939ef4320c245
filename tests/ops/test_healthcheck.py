"""The image's HEALTHCHECK logic (ops/healthcheck.py) against real Redis heartbeats, and the entry point's
role table (ops/container.py)."""
from __future__ import annotations

import socket
import uuid

import pytest

from ops import container, healthcheck
from workers.wire import notify


@pytest.fixture()
def key(redis_client):
    k = f"test-health:{uuid.uuid4().hex}"
    yield k
    redis_client.delete(k)


def _beat(redis_client, key: str, host: str, **info) -> None:
    notify.publish_heartbeat(redis_client, "m", host, info, ttl_s=10, key=key)


def test_own_fresh_ready_heartbeat_is_healthy(redis_client, key):
    _beat(redis_client, key, f"{socket.gethostname()}:4242", state="ready", consuming=True)
    assert healthcheck.own_heartbeat_ok(key)


def test_another_hosts_heartbeat_does_not_count(redis_client, key):
    _beat(redis_client, key, "some-other-container:4242", state="ready", consuming=True)
    assert not healthcheck.own_heartbeat_ok(key)


@pytest.mark.parametrize("info", [{"state": "loading"}, {"state": "ready", "consuming": False}])
def test_loading_or_not_consuming_is_unhealthy(redis_client, key, info):
    _beat(redis_client, key, f"{socket.gethostname()}:4242", **info)
    assert not healthcheck.own_heartbeat_ok(key)


def test_web_that_does_not_answer_is_unhealthy(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WEB_BIND", f"0.0.0.0:{port}")
    assert not healthcheck.check_web()


def test_no_role_started_is_unhealthy(tmp_path, monkeypatch):
    monkeypatch.setattr(healthcheck, "ROLE_FILE", tmp_path / "missing")
    with pytest.raises(SystemExit) as exc:
        healthcheck.main()
    assert exc.value.code == 1


def test_unknown_role_is_refused():
    with pytest.raises(SystemExit, match="unknown role 'nope'"):
        container.main(["nope"])


def test_procfile_roles_resolve_to_their_lines():
    text = "# comment\nweb: gunicorn x\nopenpi: python -m y\n"
    assert container.procfile_command("web", text) == "gunicorn x"
    with pytest.raises(KeyError):
        container.procfile_command("flower", text)
