"""The HTTP edge's abuse cases (issue 21), fired by ops/bench/abuse.py at its gunicorn worker.

Target: a request without a valid key costs the web process at most 10 ms of CPU and 1 MB of memory, whatever
its body. Method: each case is sent REPEAT times, each on a new connection (gunicorn 27 drains at most 64 KB
of an unread body, then closes the connection; that drain is counted); CPU is the sum over the worker's threads of
/proc/<pid>/task/*/schedstat (nanoseconds on CPU) before and after, divided by REPEAT; memory is the peak RSS
(VmHWM, reset through clear_refs) during the case minus the RSS before it. Client-side time is wall time.
"""
from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPEAT = 20
TARGET_CPU_MS, TARGET_MB = 10.0, 1.0
HOSTILE = b"[" + b"{}," * 1_000_000 + b"{}]"  # 3 MB: a million empty objects if anything parsed it


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total


def _kb(pid: int, field: str) -> int:
    return int(next(ln.split()[1] for ln in open(f"/proc/{pid}/status") if ln.startswith(field + ":")))


def _request(port: int, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request on a new connection; the answer is read even if the server stopped reading the body
    (a refusal before reading it) and closed the connection while the body was still being sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path)
    for k, v in {"Content-Type": "application/json", **(headers or {}), "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders()
    try:
        conn.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        code = json.loads(data).get("type", "").rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        code = "-"
    return resp.status, code


def _declared_only(port: int, path: str, declared: int, headers: dict[str, str],
                   method: str = "POST") -> tuple[int, str]:
    """Headers claiming `declared` bytes, then 1 KB of it: the answer must come without the rest."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path)
    for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(declared)}.items():
        conn.putheader(k, v)
    conn.endheaders(b" " * 1024)
    resp = conn.getresponse()
    status, code = resp.status, json.loads(resp.read()).get("type", "").rsplit("/", 1)[-1]
    conn.close()
    return status, code


def _chunked(port: int, path: str, total: int, headers: dict[str, str]) -> tuple[int, str]:
    """A chunked body of `total` bytes, sent until the server answers or stops reading."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", path)
    for k, v in {**headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    chunk, sent = b" " * (1 << 16), 0
    try:
        while sent < total:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the end: what a 413 may do
    resp = conn.getresponse()
    status, code = resp.status, json.loads(resp.read()).get("type", "").rsplit("/", 1)[-1]
    conn.close()
    return status, code


def measure(wpid: int, name: str, send: Callable[[], tuple[int, str]], repeat: int = REPEAT) -> dict[str, Any]:
    Path(f"/proc/{wpid}/clear_refs").write_text("5")
    rss, cpu0, started = _kb(wpid, "VmRSS"), cpu_ns(wpid), time.perf_counter()
    statuses = {send() for _ in range(repeat)}
    wall, cpu = time.perf_counter() - started, cpu_ns(wpid) - cpu0
    return {"case": name, "status": "/".join(f"{s} {c}" for s, c in sorted(statuses)), "repeat": repeat,
            "wall_ms": round(wall / repeat * 1000, 2), "cpu_ms": round(cpu / repeat / 1e6, 2),
            "extra_mb": round((_kb(wpid, "VmHWM") - rss) / 1024, 2)}


def anonymous_cases(port: int, wpid: int) -> list[dict[str, Any]]:
    """The target's cases: no key or a wrong one, hostile or empty bodies, matched routes or not."""
    rows = []
    for name, path, headers, body in (
        ("anon 3 MB [{},...] POST /act", "/act", {}, HOSTILE),
        ("anon 3 MB [{},...] POST /openvla/m/act", "/openvla/openvla-tiny/act", {}, HOSTILE),
        ("anon 3 MB [{},...] unknown path", "/no/such/path", {}, HOSTILE),
        ("anon 3 MB [{},...] POST /v1/jobs", "/v1/jobs", {}, HOSTILE),
        ("wrong key 3 MB [{},...] POST /act", "/act", {"Authorization": "Bearer vla_live_nope"}, HOSTILE),
        ("anon empty body POST /act", "/act", {}, b""),
    ):
        # A fresh connection each time: gunicorn closes one whose unread body is over 64 KB rather than drain it.
        rows.append(measure(wpid, name, lambda p=path, h=headers, b=body: _request(port, "POST", p, b, h)))
    return rows


def keyed_cases(port: int, wpid: int, key: str, limit: int) -> list[dict[str, Any]]:
    """With a valid key: limits, bounds and the guard on /act's body forms (correctness, and their cost)."""
    auth = {"Authorization": f"Bearer {key}"}
    image = np.zeros((64, 64, 3), np.uint8)
    arr = {"__numpy__": base64.b64encode(image.tobytes()).decode(), "dtype": "|u1", "shape": [64, 64, 3]}
    ctrl = json.dumps({"image": arr, "instruction": "pick\u0001up"}).encode()
    encoded = json.dumps({"encoded": ctrl.decode()}).encode()
    return [
        measure(wpid, "Content-Length over limit /v1/jobs",
                lambda: _declared_only(port, "/v1/jobs", limit + 1, auth), 5),
        measure(wpid, "Content-Length 100 KB DELETE /v1/jobs/x", lambda: _declared_only(
            port, "/v1/jobs/00000000-0000-0000-0000-000000000000", 100_000, auth, "DELETE"), 5),
        measure(wpid, "chunked past limit /v1/jobs", lambda: _chunked(port, "/v1/jobs", limit + (1 << 20), auth), 3),
        measure(wpid, "keyed 3 MB [{},...] POST /act", lambda: _request(port, "POST", "/act", HOSTILE, auth), 5),
        measure(wpid, "U+0001 instruction /act json", lambda: _request(port, "POST", "/act", ctrl, auth), 5),
        measure(wpid, "U+0001 instruction /act encoded", lambda: _request(port, "POST", "/act", encoded, auth), 5),
        measure(wpid, "U+0001 instruction /act text/plain", lambda: _request(
            port, "POST", "/act", ctrl, {**auth, "Content-Type": "text/plain"}), 5),
    ]


def over_limit_case(port: int, wpid: int, free_key: str, side: int = 2000) -> dict[str, Any]:
    """A Free customer over its minute sends a side x side image to /act: 429 before any conversion. For
    scale, the conversion that a 422/200 used to cost first (web/compat/arrays.py, in this process)."""
    import io

    from PIL import Image

    image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    arr = {"__numpy__": base64.b64encode(image.tobytes()).decode(), "dtype": "|u1", "shape": [side, side, 3]}
    body = json.dumps({"image": arr, "instruction": "pick up the block"}).encode()
    row = measure(wpid, f"Free over limit, {side}x{side} /act", lambda: _request(
        port, "POST", "/act", body, {"Authorization": f"Bearer {free_key}"}), 3)
    started = time.process_time()
    Image.fromarray(image).save(io.BytesIO(), format="PNG", compress_level=1)  # the door's PNG before issue 26
    row["conversion_cpu_ms"] = round((time.process_time() - started) * 1000, 1)
    return row


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'case':42} {'status':34} {'n':>3} {'wall ms':>8} {'cpu ms':>7} {'+MB':>6}")
    for r in rows:
        extra = f"  (conversion alone: {r['conversion_cpu_ms']} ms CPU)" if "conversion_cpu_ms" in r else ""
        print(f"{r['case']:42} {r['status']:34} {r['repeat']:>3} {r['wall_ms']:>8} {r['cpu_ms']:>7} "
              f"{r['extra_mb']:>6}{extra}")


def print_summary(rows: list[dict[str, Any]]) -> bool:
    print()
    print_rows(rows)
    anonymous = [r for r in rows if r["case"].startswith(("anon", "wrong key"))]
    ok = all(r["cpu_ms"] <= TARGET_CPU_MS and r["extra_mb"] <= TARGET_MB for r in anonymous)
    print(f"every request without a valid key within {TARGET_CPU_MS} ms CPU and {TARGET_MB} MB: {ok}")
    return ok
