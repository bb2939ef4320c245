"""The operator CLI against the real database: customers, keys, and the dev stack's set-up step."""
from __future__ import annotations

import os
import re
import uuid

from click.testing import CliRunner

from ops import stack
from ops.cli import main
from web.accounts.keys import check_format

KEY = re.compile(r"vla_live_[0-9A-Za-z]+")


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_customers_and_keys_lifecycle(client):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert "on tier free" in _run("customers", "create", name)
    assert "now on tier pro" in _run("customers", "set-tier", name, "pro")
    assert name in _run("customers", "list")
    key = KEY.search(_run("keys", "create", "--customer", name)).group(0)
    assert check_format(key)
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/usage", headers=auth).get_json()["tier"] == "pro"
    new = KEY.search(_run("keys", "rotate", key, "--grace-hours", "1")).group(0)
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert client.get("/v1/usage", headers=auth).status_code == 200  # still inside its grace period
    listing = _run("keys", "list", "--customer", name)
    assert key[:21] in listing and new[:21] in listing
    assert "revoked" in _run("keys", "revoke", key[:21])
    assert client.get("/v1/usage", headers=auth).status_code == 401


def test_cli_errors_are_messages_not_tracebacks():
    result = CliRunner().invoke(main, ["customers", "set-tier", "nobody-here", "gold"])
    assert result.exit_code != 0 and "unknown tier 'gold'" in result.output
    result = CliRunner().invoke(main, ["keys", "create", "--customer", f"missing-{uuid.uuid4().hex[:6]}"])
    assert result.exit_code != 0 and "--create-customer" in result.output


def test_dev_run_sets_up_and_prints_a_working_key(client, monkeypatch, tmp_path):
    # Its own .data: the suite must not overwrite the stack file of a `make run` going on in this checkout.
    monkeypatch.setattr(stack, "DATA", tmp_path)
    out = _run("dev", "run", "--no-procs")
    key = KEY.search(out).group(0)
    assert "curl -s -X POST" in out and "/v1/inference" in out
    assert stack.read_state(tmp_path)["DATABASE_URL"] == os.environ["DATABASE_URL"]  # for other terminals
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"}).get_json()["tier"] == "pro"
