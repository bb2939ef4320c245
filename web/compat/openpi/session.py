"""One openpi message through the same admission path as `POST /v1/inference`, inside a Flask request context
(run in a worker thread of the websocket process: the path is synchronous, like the web's)."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Flask, g

from web.auth import Principal, authenticate
from web.compat.openpi import mappings
from web.errors import PROBLEM_BASE, ApiError
from web.services import admission, catalog, idempotency, inference
from workers import logs


@dataclass
class Connection:
    """What a websocket connection carries from its handshake: the model, the key, the layout options."""

    model: str
    authorization: str
    mapping: str = "auto"
    prompt: str | None = None
    deadline_ms: int | None = None
    robot_type: str | None = None
    prev_total_ms: float | None = None
    customer_id: str = ""  # set once the handshake has checked the key


def handshake(app: Flask, conn: Connection) -> tuple[Principal, dict[str, Any] | None]:
    """The handshake's key check (raises ApiError 401/403), so a bad key never gets a websocket, and the model's
    description (None while no worker has reported it), which sizes the connection's frame budget."""
    with app.test_request_context("/v1/openpi", headers={"Authorization": conn.authorization or ""}):
        g.request_id = f"req_{uuid.uuid4().hex}"
        principal = authenticate()
        return principal, catalog.spec_of(app.config["SETTINGS"], conn.model)


def precheck(app: Flask, conn: Connection) -> None:
    """Before a frame is decoded: 429 if the rate limit, the quota or the in-flight cap would refuse it now.
    Consumes nothing; the admission inside `infer` counts, as on REST."""
    with app.test_request_context(f"/v1/openpi/{conn.model}", headers={"Authorization": conn.authorization}):
        g.request_id = f"req_{uuid.uuid4().hex}"
        authenticate()
        try:
            admission.refuse_if_over_limit(in_flight=True)
        except ApiError as err:
            err.extra.setdefault("request_id", g.request_id)
            raise


def metadata(app: Flask, conn: Connection) -> dict[str, Any]:
    """The first message of a connection (openpi sends its policy metadata): the model's description."""
    with app.app_context():
        spec = catalog.spec_of(app.config["SETTINGS"], conn.model) or {}
    keep = ("family", "action_dim", "chunk_length", "cameras", "state_dim", "action_type", "units", "unnorm_keys",
            "real_time_chunking")
    return {"server": "vlaapi", "model": conn.model, "mapping": conn.mapping, **{k: spec.get(k) for k in keep}}


def infer(app: Flask, conn: Connection, obs: Any) -> dict[str, Any]:
    """One observation in, openpi's response out: {"actions": (chunk, D), "server_timing", "policy_timing"}.
    Raises ApiError for anything a REST call would answer with a problem document."""
    started = time.monotonic()
    # A message's optional idempotency key becomes the header /v1/inference reads (services/idempotency.py).
    headers = {"Authorization": conn.authorization, **idempotency.observation_header(obs)}
    with app.test_request_context(f"/v1/openpi/{conn.model}", method="POST", headers=headers):
        g.request_id = f"req_{uuid.uuid4().hex}"
        logs.bind(request_id=g.request_id, customer_id=None)
        authenticate()  # every message: a key revoked mid-connection stops working at once
        settings = app.config["SETTINGS"]
        spec = catalog.spec_of(settings, conn.model) or {}
        body = mappings.to_body(obs, spec, conn.mapping, conn.prompt)
        body = {**_options(conn), **body, "model": conn.model}  # a message's own deadline_ms wins
        try:
            job = inference.submit_and_wait(inference.load_request(body))
            action = inference.final_action(job)
        except ApiError as err:
            err.extra.setdefault("request_id", g.request_id)
            raise
        usage = g.get("usage")
    values = np.asarray(action["values"], dtype=np.float64)
    result = job.result or {}
    perf = result.get("model_timings_ms") or {}
    return {
        "actions": values.reshape(1, -1) if values.ndim == 1 else values,
        "server_timing": {"infer_ms": (time.monotonic() - started) * 1000,
                          **({"prev_total_ms": conn.prev_total_ms} if conn.prev_total_ms is not None else {})},
        "policy_timing": {k: float(v) for k, v in perf.items() if isinstance(v, int | float)},
        "vlaapi": {"job_id": str(job.id), "request_id": job.request_id, "usage": usage,
                   "safety": {k: (result.get("safety") or {}).get(k) for k in ("decision", "flags")}},
    }


def _options(conn: Connection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conn.deadline_ms:
        out["deadline_ms"] = conn.deadline_ms
    if conn.robot_type:
        out["robot_config"] = {"type": conn.robot_type}
    return out


def problem_text(err: ApiError) -> str:
    """The text frame openpi's client raises on: a readable line, then the problem document as JSON."""
    doc = {"type": PROBLEM_BASE + err.code, "title": err.code.replace("_", " ").capitalize(),
           "status": err.status, "detail": err.detail, **({"field": err.field} if err.field else {}), **err.extra}
    return f"{err.status} {err.code}: {err.detail}\n{json.dumps(doc, default=str)}"
