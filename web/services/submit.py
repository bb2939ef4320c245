"""Validate an inference request, write its job row, and enqueue the chain `infer | safety`.

Everything that can be checked at the edge is checked before anything is written, so a bad request is
a 4xx with nothing stored and nothing queued.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, delete, insert

from safety import validate_robot_config
from safety.errors import SafetyConfigError
from web import body_limits, db
from web.auth import Principal
from web.errors import ApiError, accepted_wait_failed, best_effort
from web.services import catalog, deferred, rtc
from web.services.raw_images import RawImage
from workers.settings import Settings
from workers.store.models import Job
from workers.tasks import broker_redis_url, send_job
from workers.wire import frames, notify, resend
from workers.wire.images import ImageRejected, inspect

DEFAULT_CAMERA = "primary"


@dataclass
class Prepared:
    payload: dict[str, Any]  # what the GPU worker receives (images described, not included)
    record: dict[str, Any]  # what the job row keeps (images by hash and size)
    deadline_at: datetime
    frames: dict[str, bytes] = field(default_factory=dict)  # the images' bytes, beside the message
    deadline_ms: int = 0


def prepare(settings: Settings, data: dict[str, Any], request_id: str, kind: str = "interactive") -> Prepared:
    catalog.require_model(settings, data["model"])
    images = data.get("images") or {_default_camera(settings, data["model"]): data["image"]}
    images_in = deferred.resolve_images(images)  # a compatibility door's arrays: laid out now, once counted
    checked = {cam: _check_image(settings, cam, value, "images" in data) for cam, value in images_in.items()}
    image_meta = {cam: meta for cam, (meta, _) in checked.items()}
    _check_spec(settings, data, images_in)
    robot_config = data.get("robot_config") or {"type": default_robot(settings, data.get("unnorm_key"))}
    try:
        validate_robot_config(robot_config)
    except SafetyConfigError as exc:
        raise ApiError(422, "invalid_robot_config", exc.message, field=exc.field) from None
    deadline_ms = min(data.get("deadline_ms") or settings.default_deadline_ms, settings.max_deadline_ms)
    deadline_at = datetime.now(UTC) + timedelta(milliseconds=deadline_ms)
    options = {k: data[k] for k in ("unnorm_key", "seed", "rtc") if k in data}
    common = {
        "model": data["model"], "kind": kind, "instruction": data["instruction"], "state": data.get("state"),
        "options": options, "robot_config": robot_config,
        "robot_state": data.get("robot_state"), "safety": data.get("safety") or {},
    }
    # The message describes the images; their bytes travel beside it, once (workers/wire/frames.py).
    payload = {**common, "images": image_meta, "request_id": request_id, "deadline": deadline_at.timestamp()}
    record = {**common, "images": image_meta, "deadline_ms": deadline_ms}
    return Prepared(payload, record, deadline_at, {cam: raw for cam, (_, raw) in checked.items()}, deadline_ms)


# The robots behind OpenVLA's best-known dataset statistics (robot-limits.md §4, §5).
_ROBOT_OF_DATASET = {"bridge_orig": "widowx_250", "bridge_dataset": "widowx_250",
                     "fractal20220817_data": "google_robot"}


def default_robot(settings: Settings, unnorm_key: str | None) -> str:
    """The profile a request without robot_config is checked against; stored in the job's request."""
    return _ROBOT_OF_DATASET.get(unnorm_key or "", settings.safety_default_robot)


def _default_camera(settings: Settings, model: str) -> str:
    spec = catalog.spec_of(settings, model)
    return spec["cameras"][0] if spec and spec.get("cameras") else DEFAULT_CAMERA


def _check_image(settings: Settings, cam: str, value: Any, multi: bool) -> tuple[dict[str, Any], bytes]:
    """The image's description (for the message and the job row) and its bytes (kept beside the message)."""
    field = f"images.{cam}" if multi else "image"
    if isinstance(value, RawImage):
        return value.checked(settings.max_image_bytes, field)
    # bytes: a msgpack body's encoded image, as it came (no base64 to undo)
    raw = value if isinstance(value, bytes) else _from_base64(settings, value, field)
    if len(raw) > settings.max_image_bytes:
        raise ApiError(413, "image_too_large", f"image is larger than {settings.max_image_bytes} bytes", field=field)
    try:
        info = inspect(raw)  # header and structure only: the GPU worker decodes the pixels, once
    except ImageRejected as exc:
        raise ApiError(422, "invalid_image", exc.message, field=field) from None
    return frames.describe(raw, height=info.height, width=info.width, format=info.format), raw


def _from_base64(settings: Settings, b64: str, field: str) -> bytes:
    if len(b64) > body_limits.image_base64_len(settings):
        raise ApiError(413, "image_too_large", f"image is larger than {settings.max_image_bytes} bytes", field=field)
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_image", "not valid base64", field=field) from None


def _check_spec(settings: Settings, data: dict[str, Any], images: dict[str, str]) -> None:
    """Checks that need the model's own description; skipped while no worker has reported one."""
    spec = catalog.spec_of(settings, data["model"])
    if spec is None:
        return
    check_unnorm_key(spec, data.get("unnorm_key"))
    unknown = sorted(set(images) - set(spec.get("cameras") or images))
    if unknown:
        raise ApiError(422, "unknown_camera", f"unknown camera(s) {unknown}; this model expects {spec['cameras']}",
                       field="images")
    state_dim = spec.get("state_dim")
    if data.get("state") is not None and state_dim and len(data["state"]) > state_dim:
        raise ApiError(422, "invalid_state", f"state has {len(data['state'])} values; at most {state_dim}",
                       field="state")
    rtc.check(spec, data.get("rtc"))


def check_unnorm_key(spec: dict[str, Any] | None, key: str | None) -> None:
    """422 listing the valid keys, when the model's worker has told us its dataset statistics."""
    keys = (spec or {}).get("unnorm_keys") or []
    if key is not None and keys and key not in keys:
        raise ApiError(422, "unknown_unnorm_key", f"unknown unnorm_key {key!r}; valid keys: {', '.join(keys)}",
                       field="unnorm_key", valid=keys)


def request_hash(data: dict[str, Any]) -> str:
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=deferred.json_default)
    return hashlib.sha256(body.encode()).hexdigest()


def create_job(principal: Principal, prepared: Prepared, request_id: str, *, job_id: uuid.UUID,
               idempotency_key: str | None = None, req_hash: str | None = None,
               also: Callable[[Any], None] | None = None) -> Job:
    """Write the job row, then enqueue. If the broker refuses, the row is removed: nothing half-written.
    `also(pipe)` adds commands to the round trip that stores the images (before the row and the publish)."""
    job = Job(id=job_id, customer_id=uuid.UUID(principal.customer_id), model=prepared.payload["model"],
              kind=prepared.payload["kind"], request_id=request_id, request=prepared.record, state="queued",
              deadline_at=prepared.deadline_at, idempotency_key=idempotency_key, request_hash=req_hash,
              created_at=datetime.now(UTC), attempts=0)
    # created_at travels with the job so the workers can measure queue wait and total latency (telemetry).
    payload = {**prepared.payload, "job_id": str(job.id), "created_at": job.created_at.timestamp()}
    safety_job = {k: v for k, v in payload.items() if k != "images"}
    # The images and the copy go first, in one round trip: if this process dies between the commit and the
    # publish, the reaper still has the message to send (workers/wire/resend.py), and the worker its images.
    r = notify.client(current_app.config["SETTINGS"].redis_url)
    pipe = r.pipeline(transaction=False)
    resend.keep(pipe, str(job.id), payload, safety_job)
    if also is not None:
        also(pipe)
    broker = notify.client(broker_redis_url())  # the same client, unless a test splits the two servers
    images = pipe if broker is r else broker.pipeline(transaction=False)
    frames.stage(images, str(job.id), prepared.frames, frames.ttl_for(prepared.deadline_ms / 1000))
    if images is not pipe:
        images.execute()
    pipe.execute()
    # The job is accepted when its row is written, so created_at is taken now, after the Redis round trip (the
    # copy keeps the time it was made, a moment earlier). Not the server default: now() is the transaction's
    # start, which for a web request is the authentication query, and would inflate queue_wait_ms.
    job.created_at = datetime.now(UTC)
    payload["created_at"] = safety_job["created_at"] = job.created_at.timestamp()
    s = db.session()
    # A plain INSERT of the row's columns: the ORM's unit of work cost the request more CPU than the insert.
    # The returned Job stays outside the session: waiting.wait_for replaces it with the settled row (from the
    # worker's token, or read afresh), never by refreshing this object.
    try:
        s.execute(_INSERT_JOB, {c: getattr(job, c) for c in _JOB_INSERT_COLUMNS})
        s.commit()
    except Exception:
        # The answer will say nothing was written. A commit whose reply was lost may still have landed: without
        # its copy the reaper never publishes that row, it only ends it at its deadline, uncharged.
        best_effort(lambda: resend.take(r, str(job.id)), "drop of the resend copy")
        best_effort(lambda: broker.delete(frames.key(str(job.id))), "drop of the images")
        raise
    _enqueue_or_undo(lambda: send_job(payload, safety_job), lambda: s.execute(_DELETE_JOB, {"id": job.id}), "job",
                     job_id=str(job.id))
    return job


_JOB_INSERT_COLUMNS = ("id", "customer_id", "model", "kind", "request_id", "request", "state", "deadline_at",
                       "idempotency_key", "request_hash", "created_at", "attempts")
_INSERT_JOB = insert(Job.__table__)
_DELETE_JOB = delete(Job.__table__).where(Job.__table__.c.id == bindparam("id"))


def commit_then_enqueue(row: Any, send: Callable[[], None], what: str) -> None:
    """Commit the row, then send its message; if the broker refuses, remove the row: nothing half-written.

    The row goes first so a worker never receives a message whose row does not exist yet."""
    s = db.session()
    s.add(row)
    s.commit()
    _enqueue_or_undo(send, lambda: s.delete(row), what)


def _enqueue_or_undo(send: Callable[[], None], undo: Callable[[], Any], what: str, *,
                     job_id: str | None = None) -> None:
    """Send the committed row's message; if the broker refuses, remove the row (a 503): nothing half-written.

    If the removal fails too (the database went with the broker), the job row stands with its resend copy, so
    the reaper publishes or ends it: a job's answer is then a 503 that carries its id (AcceptedError)."""
    try:
        send()
    except Exception:
        current_app.logger.warning("enqueue failed", exc_info=True)
        try:
            s = db.session()
            undo()
            s.commit()
        except Exception as exc:
            if job_id is None:
                raise
            raise accepted_wait_failed(job_id, exc, state="queued") from None
        raise ApiError(503, "queue_unavailable", f"could not enqueue the {what}; retry shortly",
                       headers={"Retry-After": "1"}) from None

