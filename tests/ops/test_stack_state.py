"""The CLI finds the stack `make run` started (ops/stack.py's state file) and says what to do when it cannot."""
from __future__ import annotations

import os
import stat
import uuid

import pytest
from click.testing import CliRunner

from ops import stack
from ops.cli import main
from tests.integration.live import free_port
from workers.settings import reload_settings


@pytest.fixture()
def fresh_shell(monkeypatch, tmp_path):
    """A second terminal: no DATABASE_URL / REDIS_URL exported, and this test's own .data directory."""
    urls = {k: os.environ[k] for k in ("DATABASE_URL", "REDIS_URL")}
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setattr(stack, "DATA", tmp_path)
    reload_settings()
    yield urls, tmp_path
    monkeypatch.undo()
    reload_settings()  # the suite's own settings again


def test_cli_finds_the_recorded_stack(fresh_shell, settings):
    urls, data = fresh_shell
    name = f"found-{uuid.uuid4().hex[:8]}"
    path = stack.write_state(data, urls, web="http://127.0.0.1:8000")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # URLs may carry a password
    assert settings.api_key_pepper not in path.read_text()
    result = CliRunner().invoke(main, ["customers", "create", name])
    assert result.exit_code == 0, result.output
    assert name in CliRunner().invoke(main, ["customers", "list"]).output


def test_no_stack_says_what_to_do(fresh_shell):
    result = CliRunner().invoke(main, ["customers", "list"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "make run" in result.output and "vlaapi dev services" in result.output and "DATABASE_URL" in result.output


def test_stack_that_stopped_says_so(fresh_shell):
    urls, data = fresh_shell
    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/vlaapi"
    stack.write_state(data, {"DATABASE_URL": dead, "REDIS_URL": urls["REDIS_URL"]})
    result = CliRunner().invoke(main, ["keys", "list", "--customer", "demo"])
    assert result.exit_code == 1 and "PostgreSQL does not answer" in result.output and "make run" in result.output


def test_pepper_mismatch_is_a_warning(fresh_shell, monkeypatch):
    urls, data = fresh_shell
    stack.write_state(data, urls)
    monkeypatch.setenv("API_KEY_PEPPER", "another-pepper")
    reload_settings()
    result = CliRunner().invoke(main, ["customers", "list"])
    assert result.exit_code == 0 and "API_KEY_PEPPER here differs" in result.output


def test_stopping_the_embedded_servers_removes_the_state_file(tmp_path):
    """`vlaapi dev stop` after `make run`: the state file goes, the data folder stays (it once tried to unlink
    the folder itself and raised IsADirectoryError)."""
    stack.write_state(tmp_path, {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y"})
    assert stack.read_state(tmp_path) is not None
    stack.remove_state(tmp_path)
    assert stack.read_state(tmp_path) is None and tmp_path.is_dir()
    stack.remove_state(tmp_path)  # twice is fine
