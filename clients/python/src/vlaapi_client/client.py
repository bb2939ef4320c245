"""VLAClient: act (submit and wait in one call), submit / get / wait / poll / cancel, replays."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from vlaapi_client import replays
from vlaapi_client.errors import ActionRejected, DeadlineExceeded, from_status
from vlaapi_client.images import encode_images, raw_images
from vlaapi_client.transport import Transport, new_idempotency_key
from vlaapi_client.wire import body_kwargs

TERMINAL = ("succeeded", "failed", "expired", "canceled")


@dataclass
class Inference:
    """One answer of POST /v1/inference: the actions as numpy (chunk, D), and what came with them."""

    actions: np.ndarray
    job_id: str
    request_id: str
    safety: dict[str, Any]
    performance: dict[str, Any]
    usage: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


class VLAClient:
    """A client of one vlaapi service with one API key.

    `model` is the default model for `act` and `submit`; `max_retries` applies to 429/502/503 answers, each
    retried after the service's Retry-After. With `raw_arrays`, requests are msgpack bodies in which numpy
    images travel as raw arrays (no PNG encoding here, no decoding there; needs the msgpack package); else JSON
    with images as base64 PNG.
    """

    def __init__(self, base_url: str, api_key: str, *, model: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, session: requests.Session | None = None, raw_arrays: bool = False):
        self.http = Transport(base_url, api_key, timeout=timeout, max_retries=max_retries, session=session)
        self.model = model
        self.raw_arrays = raw_arrays

    # --- one call per control step -------------------------------------------------------------------
    def act(self, images: Any, instruction: str, *, state: Any = None, deadline_ms: int | None = None,
            model: str | None = None, **options: Any) -> np.ndarray:
        """Actions for one observation, safety-checked: numpy (chunk, D) ((1, D) for single-step models).

        `images` is one image (uint8 (H, W, 3) array, PIL image, PNG/JPEG bytes or a file path) or a mapping
        of camera name to image. Other options (unnorm_key, robot_config, robot_state, safety, seed) are
        passed as they are. Raises DeadlineExceeded at the deadline, ActionRejected when the safety stage
        rejected the action, and the other VLAError subclasses for refusals."""
        return self.infer(images, instruction, state=state, deadline_ms=deadline_ms, model=model, **options).actions

    def infer(self, images: Any, instruction: str, *, state: Any = None, deadline_ms: int | None = None,
              model: str | None = None, **options: Any) -> Inference:
        """Like `act`, returning the whole answer (safety block, timings, usage, ids)."""
        body = self._body(images, instruction, state, deadline_ms, model, options)
        # Refusals (429/503) and lost connections are retried while the deadline allows, all with one
        # Idempotency-Key: a retry of a request that was admitted answers its job, never runs a second one.
        budget = None if deadline_ms is None else deadline_ms / 1000
        resp = self.http.request("POST", "/v1/inference", **self._wire(body), budget_s=budget,
                                 idempotency_key=new_idempotency_key(),
                                 timeout=max(self.http.timeout, (budget or 0) + 5))
        doc = resp.json()
        if resp.status_code == 202:  # the service's wait ran out before the job finished
            doc = self.wait(doc["id"], timeout=(budget or self.http.timeout))
            return self._from_job(doc)
        return _inference(doc)

    def _body(self, images: Any, instruction: str, state: Any, deadline_ms: int | None, model: str | None,
              options: dict[str, Any]) -> dict[str, Any]:
        pictures = raw_images(images) if self.raw_arrays else encode_images(images)
        body: dict[str, Any] = {"model": model or self.model or self.default_model(), "instruction": instruction,
                                **pictures, **options}
        if state is not None:
            body["state"] = [float(x) for x in np.asarray(state, dtype=np.float64).ravel()]
        if deadline_ms is not None:
            body["deadline_ms"] = int(deadline_ms)
        return body

    def _wire(self, body: dict[str, Any]) -> dict[str, Any]:
        return body_kwargs(body, msgpack_body=self.raw_arrays)

    def default_model(self) -> str:
        """The first ready model the service lists (cached once found)."""
        models = self.models()
        ready = [m["name"] for m in models if m.get("ready")] or [m["name"] for m in models]
        if not ready:
            raise ValueError("the service lists no models; pass model=")
        self.model = ready[0]
        return self.model

    # --- jobs ---------------------------------------------------------------------------------------
    def submit(self, images: Any, instruction: str, *, state: Any = None, deadline_ms: int | None = None,
               model: str | None = None, idempotency_key: str | None = None, **options: Any) -> dict[str, Any]:
        """POST /v1/jobs: the job (state `queued`). One Idempotency-Key per call, reused by its retries, so a
        retried submission never makes a second job."""
        body = self._body(images, instruction, state, deadline_ms, model, options)
        key = idempotency_key or new_idempotency_key()
        return self.http.request("POST", "/v1/jobs", **self._wire(body), idempotency_key=key).json()

    def get(self, job_id: str) -> dict[str, Any]:
        return self.http.request("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the job is final or `timeout` passes (the service waits at most 60 s per call)."""
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, min(60.0, end - time.monotonic()))
            job = self.http.request("GET", f"/v1/jobs/{job_id}/wait", params={"timeout": round(left, 3)},
                                    timeout=left + self.http.timeout).json()
            if job["state"] in TERMINAL or time.monotonic() >= end:
                return job

    def poll(self, job_id: str, interval: float = 0.1, timeout: float = 30.0) -> dict[str, Any]:
        """Re-read the job every `interval` seconds until it is final or `timeout` passes."""
        end = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["state"] in TERMINAL or time.monotonic() >= end:
                return job
            time.sleep(interval)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.http.request("DELETE", f"/v1/jobs/{job_id}").json()

    def actions_of(self, job: dict[str, Any]) -> np.ndarray:
        """The numpy actions of a finished job, or the typed error of one that did not succeed."""
        return self._from_job(job).actions

    def _from_job(self, job: dict[str, Any]) -> Inference:
        if job["state"] != "succeeded":
            err = job.get("error") or {}
            problem = {"type": err.get("code", job["state"]), "detail": err.get("detail", job["state"]),
                       "request_id": job.get("request_id"), "job_id": job.get("id")}
            if job["state"] == "expired" or err.get("code") == "deadline_exceeded":
                raise DeadlineExceeded(504, problem)
            raise from_status(422 if err.get("code") == "invalid_input" else 502, problem, None)
        return _inference({"job_id": job["id"], "request_id": job["request_id"], **(job.get("result") or {}),
                           "performance": job.get("performance") or {}, "usage": None})

    # --- the rest of the API --------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return self.http.request("GET", "/v1/models/list").json()["models"]

    def usage(self) -> dict[str, Any]:
        return self.http.request("GET", "/v1/usage").json()

    def replay(self, dataset: Any, model: str | None = None, **kw: Any) -> dict[str, Any]:
        """Replay a recorded dataset (a local file or directory, uploaded; or server_path=...) and follow it
        with a progress bar; see vlaapi_client.replays.run."""
        return replays.run(self.http, dataset, model or self.model or self.default_model(), **kw)

    def replay_results(self, replay_id: str, fmt: str = "jsonl") -> bytes:
        return self.http.request("GET", f"/v1/replays/{replay_id}/results", params={"format": fmt}).content


def _inference(doc: dict[str, Any]) -> Inference:
    action = doc.get("action") or {}
    values = action.get("values")
    if values is None:
        raise ActionRejected(200, {"type": "action_rejected", "detail": "the safety stage rejected this action",
                                   "request_id": doc.get("request_id"), "safety": doc.get("safety")})
    arr = np.asarray(values, dtype=np.float64)
    return Inference(actions=arr.reshape(1, -1) if arr.ndim == 1 else arr, job_id=doc.get("job_id", ""),
                     request_id=doc.get("request_id", ""), safety=doc.get("safety") or {},
                     performance=doc.get("performance") or {}, usage=doc.get("usage"), raw=doc)
