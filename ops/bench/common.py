"""Shared pieces of the benchmarks: percentiles, a closed-loop load generator, process helpers."""
from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ops.lifeline import lifeline

ROOT = Path(__file__).resolve().parents[2]


def server_timing(headers: Any) -> dict[str, float]:
    """The phases of a Server-Timing header (web/timing.py) in ms, by name; `total` is the request in the web."""
    out = {}
    for part in headers.get("Server-Timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        try:
            out[name] = float(dur)
        except ValueError:  # no duration: not a phase
            continue
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary_ms(latencies_s: list[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in latencies_s]
    return {"p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3), "p99_ms": round(pct(ms, 99), 3),
            "n": len(ms)}


def closed_loop(call: Callable[[int], None], clients: int, duration_s: float, warmup_s: float = 1.0,
                keep: bool = False) -> dict:
    """`clients` threads call `call(i)` back to back; latencies and throughput after a warm-up (and, with
    `keep`, the raw latencies in seconds under "latencies_s", for pooling several runs)."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + warmup_s + duration_s

    def client(i: int) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                call(i)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            t1 = time.perf_counter()
            if t0 >= start + warmup_s and t1 <= stop_at:
                with lock:
                    lat.append(t1 - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"clients": clients, "throughput_rps": round(len(lat) / duration_s, 2), "errors": errors[0],
           **summary_ms(lat)}
    return {**out, "latencies_s": lat} if keep else out


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None,
          netns: str | None = None) -> subprocess.Popen:
    """`python -m argv...`, its output to `log`; in network namespace `netns` (ops/chaos_net.py) if given."""
    from ops.faults import netns_preexec

    return subprocess.Popen([sys.executable, "-m", *argv], cwd=cwd or ROOT, env={**os.environ, **env},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            # a benchmark cut off mid-run leaves no workers behind
                            preexec_fn=netns_preexec(netns, lifeline()))


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float = 60.0) -> None:
    import requests

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def emit(result: dict) -> None:
    """The benchmarks' contract: the last line printed is one JSON object."""
    print(json.dumps(result, sort_keys=True))


def png_b64(h: int = 64, w: int = 64, seed: int = 0) -> str:
    import base64
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
