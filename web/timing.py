"""Server-Timing (W3C): where a request's time went inside the web process, as a response header.

A control loop that sees 30 ms where it expected 15 can tell from the header alone whether the time went to
admission (`auth`, `admit`), to writing and queuing the job (`enqueue`) or to waiting for the workers
(`wait`); `total` is the whole request in this process. Browsers' developer tools show it too. Only phase
names and durations go out: nothing about other customers or the deployment.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import g, has_request_context


@contextmanager
def phase(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if has_request_context():
            spent = g.setdefault("phases", {})
            spent[name] = spent.get(name, 0.0) + (time.perf_counter() - t0)


def header(total_s: float) -> str:
    parts = [f"{name};dur={secs * 1000:.2f}" for name, secs in (g.get("phases") or {}).items()]
    return ", ".join([*parts, f"total;dur={total_s * 1000:.2f}"])
