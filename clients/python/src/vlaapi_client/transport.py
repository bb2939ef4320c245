"""HTTP with retries that honour Retry-After, and problem documents turned into typed errors."""
from __future__ import annotations

import random
import time
import uuid
from typing import Any

import requests

from vlaapi_client.errors import Unavailable, VLAError, from_status

RETRY_STATUSES = (429, 502, 503)
MAX_BACKOFF_S = 30.0


class Transport:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, max_retries: int = 3,
                 session: requests.Session | None = None):
        self.base = base_url.rstrip("/")
        self.timeout, self.max_retries = timeout, max_retries
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers.setdefault("User-Agent", "vlaapi-client/0.1")
        self.retries = 0  # how many retries this client has made, for reporting

    def request(self, method: str, path: str, *, idempotent: bool | None = None, budget_s: float | None = None,
                idempotency_key: str | None = None, **kw: Any) -> requests.Response:
        """Send, retrying 429/502/503 after Retry-After (or a jittered backoff) up to `max_retries` times.

        A lost connection is retried only for GET/DELETE and for POSTs that carry an Idempotency-Key (the
        service then returns the first job instead of making a second). `budget_s` bounds the whole call:
        a retry that could not finish inside it is not attempted, and the last error is raised instead.
        """
        if idempotent is None:
            idempotent = method in ("GET", "DELETE", "HEAD") or idempotency_key is not None
        headers = dict(kw.pop("headers", None) or {})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        end = None if budget_s is None else time.monotonic() + budget_s
        timeout = kw.pop("timeout", self.timeout)
        for attempt in range(self.max_retries + 1):
            _rewind(kw.get("files"))  # a retried upload sends the whole file again
            try:
                resp = self.session.request(method, self.base + path, headers=headers, timeout=timeout, **kw)
            except requests.RequestException as exc:
                err: VLAError = Unavailable(0, {"detail": f"cannot reach {self.base}: {exc}"})
                if not idempotent:
                    raise err from exc
            else:
                if resp.status_code < 400:
                    return resp
                err = error_of(resp)
                if resp.status_code not in RETRY_STATUSES:
                    raise err
            wait = err.retry_after if err.retry_after is not None else min(MAX_BACKOFF_S, 0.25 * 2 ** attempt)
            wait += random.uniform(0, 0.1)  # so a fleet of robots refused together does not return together
            if attempt == self.max_retries or (end is not None and time.monotonic() + wait >= end):
                raise err
            self.retries += 1
            time.sleep(wait)
        raise AssertionError("unreachable")


def _rewind(files: dict[str, Any] | None) -> None:
    for value in (files or {}).values():
        fh = value[1] if isinstance(value, tuple) else value
        if hasattr(fh, "seek"):
            fh.seek(0)


def error_of(resp: requests.Response) -> VLAError:
    try:
        problem = resp.json()
    except ValueError:
        problem = {"detail": resp.text[:500]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)[:500]}
    retry_after = resp.headers.get("Retry-After")
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:  # an HTTP date: not sent by this service; fall back to backoff
        seconds = None
    ms = problem.get("retry_after_ms")
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
        # The header is whole seconds (at least 1); a fail-fast 503 says to the millisecond when the backlog
        # will have room, and a 50 Hz control loop should not sit out 50 ticks for want of a fraction.
        seconds = ms / 1e3
    return from_status(resp.status_code, problem, seconds)


def new_idempotency_key() -> str:
    return f"vlaclient-{uuid.uuid4().hex}"
