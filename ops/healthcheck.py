"""The image's HEALTHCHECK: `python -m ops.healthcheck` checks the role this container runs (ops/container.py
wrote it to the role file) and exits 0 when it is healthy, 1 when not.

  web     GET /health answers a JSON document (200 ok, or 503 degraded: the web itself works; which stages
          are missing is /health's business, not a reason to restart the web)
  worker  a heartbeat from this container for its model is fresh, says `ready` and that it still consumes
  safety  the same, for the safety stage (its watchdog's broker ping came back lately)
  reaper  its heartbeat (written after each pass) is fresh
  openpi, flower   the port accepts a connection
A process that has not yet started its role (no role file) is unhealthy; the start period covers loading.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

from ops.container import ROLE_FILE


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def check_web() -> bool:
    port = int(os.environ.get("WEB_BIND", "0.0.0.0:8000").rsplit(":", 1)[1])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return False
        body = json.load(exc)
    except (OSError, ValueError):
        return False
    return body.get("status") in ("ok", "degraded")


def own_heartbeat_ok(key: str, *, need_ready: bool = True) -> bool:
    """A fresh heartbeat in hash `key` from a process of this container (fields are `<hostname>:<pid>`)."""
    from workers.settings import get_settings
    from workers.wire import notify

    r = notify.client(get_settings().redis_url)
    mine = f"{socket.gethostname()}:"
    beats = [b for b in notify.read_heartbeats(r, "", key=key) if str(b.get("hostname", "")).startswith(mine)]
    if not need_ready:
        return bool(beats)
    return any(b.get("state") == "ready" and b.get("consuming", True) is not False for b in beats)


def check(role: list[str]) -> bool:
    from workers.wire import notify

    name = role[0] if role else ""
    if name == "web":
        return check_web()
    if name == "worker" and len(role) > 1:
        return own_heartbeat_ok(notify.heartbeat_key(role[1]))
    if name in ("safety", "reaper"):
        return own_heartbeat_ok(notify.stage_key(name))
    if name == "openpi":
        return _port_open(int(os.environ.get("OPENPI_PORT", "8765")))
    if name == "flower":
        return _port_open(int(os.environ.get("FLOWER_PORT", "5555")))
    return False


def main() -> None:
    try:
        role = ROLE_FILE.read_text().split()
    except OSError:
        print("no role started yet", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        ok = check(role)
    except Exception as exc:  # a health check reports, it never crashes with a trace
        print(f"{' '.join(role)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        ok = False
    print(f"{' '.join(role)}: {'healthy' if ok else 'unhealthy'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
