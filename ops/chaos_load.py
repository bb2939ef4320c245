"""The steady load of the fault drills, as issue 22 measured: a few clients, each alternating a synchronous
`POST /v1/inference` and a `POST /v1/jobs` followed by polling `GET /v1/jobs/<id>`, every request with an
Idempotency-Key of its own (so the drill can find the row a request made, whatever it was answered).

A synchronous request answered 503, or not answered at all, is retried with the same key as a client would,
after its Retry-After (at most 3 times): the retries must return the same job, charged once.
"""
from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from ops.chaos_stack import MODEL, Stack

TERMINAL = {"succeeded", "failed", "expired", "canceled"}
RETRIES = 3


def _png_b64() -> str:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class Answer:
    status: int  # HTTP status; 0 when no answer came (refused, reset, timed out)
    job_id: str | None  # the job id the answer told (202/200 body, or a problem document's job_id)
    code: str | None = None  # a problem document's code (its type's last part)
    retry_after: float = 1.0
    at: float = 0.0  # epoch second the request was sent


@dataclass
class Submission:
    door: str  # "sync" (POST /v1/inference) or "async" (POST /v1/jobs)
    at: float  # epoch seconds
    key: str  # its Idempotency-Key
    first: Answer
    retries: list[Answer] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.first.status

    @property
    def job_id(self) -> str | None:
        return self.first.job_id or next((r.job_id for r in self.retries if r.job_id), None)


def _answer(resp: requests.Response) -> Answer:
    try:
        body: Any = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    job_id = body.get("job_id") or (body.get("id") if resp.status_code == 202 else None)
    code = body.get("type", "").rsplit("/", 1)[-1] or None if resp.status_code >= 400 else None
    try:
        retry_after = float(resp.headers.get("Retry-After", "1"))
    except ValueError:
        retry_after = 1.0
    return Answer(resp.status_code, job_id, code, retry_after)


@dataclass
class Load:
    """`threads` clients; each alternates the two doors, at most `rate` submissions per second in all."""

    stack: Stack
    rate: float = 5.0
    threads: int = 4
    submissions: list[Submission] = field(default_factory=list)
    polls: Counter = field(default_factory=Counter)  # status of every GET /v1/jobs/<id>

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.deadline_s = self.stack.cfg.deadline_ms / 1000.0
        self._body = {"model": MODEL, "image": _png_b64(), "instruction": "pick up the red block",
                      "robot_config": {"type": "widowx_250"}, "safety": {"mode": "clamp"},
                      "deadline_ms": self.stack.cfg.deadline_ms}
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]

    def start(self) -> Load:
        for t in self._workers:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)

    def _post(self, http: requests.Session, path: str, key: str) -> Answer:
        headers = {"Authorization": f"Bearer {self.stack.api_key}", "Idempotency-Key": key}
        at = time.time()
        try:
            # A synchronous answer is due by the deadline; twice that, plus slack, is "no answer".
            answer = _answer(http.post(self.stack.base + path, json=self._body, headers=headers,
                                       timeout=2 * self.deadline_s + 5))
        except requests.RequestException:
            answer = Answer(0, None)
        answer.at = at
        return answer

    def _sync(self, http: requests.Session) -> Submission:
        key = f"chaos-{uuid.uuid4()}"
        sub = Submission("sync", time.time(), key, self._post(http, "/v1/inference", key))
        last = sub.first
        while last.status in (0, 503) and len(sub.retries) < RETRIES and not self._stop.is_set():
            self._stop.wait(min(last.retry_after, 2.0))
            last = self._post(http, "/v1/inference", key)
            sub.retries.append(last)
        return sub

    def _async(self, http: requests.Session) -> Submission:
        key = f"chaos-{uuid.uuid4()}"
        sub = Submission("async", time.time(), key, self._post(http, "/v1/jobs", key))
        if sub.first.status == 202 and sub.first.job_id:
            self._poll(http, sub.first.job_id, sub.at + self.deadline_s + 5)
        return sub

    def _poll(self, http: requests.Session, job_id: str, until: float) -> None:
        headers = {"Authorization": f"Bearer {self.stack.api_key}"}
        while time.time() < until and not self._stop.is_set():
            try:
                resp = http.get(f"{self.stack.base}/v1/jobs/{job_id}", headers=headers, timeout=10)
                status, state = resp.status_code, (resp.json() if resp.status_code == 200 else {}).get("state")
            except (requests.RequestException, ValueError):
                status, state = 0, None
            with self._lock:
                self.polls[status] += 1
            if state in TERMINAL:
                return
            self._stop.wait(0.25)

    def _run(self, i: int) -> None:
        http = requests.Session()
        period = self.threads / self.rate
        n = i  # clients start on different doors, so both are always in use
        while not self._stop.is_set():
            t0 = time.time()
            sub = self._sync(http) if n % 2 == 0 else self._async(http)
            n += 1
            with self._lock:
                self.submissions.append(sub)
            self._stop.wait(max(0.0, period - (time.time() - t0)))


def prime(stack: Stack, timeout: float = 120.0) -> float:
    """Send synchronous requests until one succeeds: a worker that reports ready can still take seconds over
    its first message (first forward pass, first connections), which is not what a drill measures."""
    load, t0 = Load(stack), time.monotonic()
    http = requests.Session()
    while time.monotonic() - t0 < timeout:
        if load._post(http, "/v1/inference", f"chaos-prime-{uuid.uuid4()}").status == 200:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"no request succeeded within {timeout} s of the stack's start; logs in {stack.dir}")
