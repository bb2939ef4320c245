"""Submit a replay: charged first (replay_admission), then parsed (JSON or multipart), checked, priced by
its steps, written and enqueued (slice 0).

Everything checkable is checked before anything is queued: the model, the robot config, the dataset's
path (the caller's own root, or an upload copied under the tier's cap), its structure and the selection,
read by a bounded child process (dataset_probe). A bad dataset is a 422 naming the field or file, with no
row written, nothing queued, the upload deleted and every unit refunded.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from flask import current_app, g, request
from flask_smorest import abort
from marshmallow import ValidationError
from werkzeug.datastructures import FileStorage

from safety import validate_robot_config
from safety.errors import SafetyConfigError
from safety.robots import profile_for
from web import db, input_guard
from web.api.replays.schemas import ReplayRequestSchema, ReplaySpecSchema
from web.auth import current
from web.errors import ApiError
from web.services import catalog, dataset_access, dataset_probe, idempotency, submit
from web.services.replay_admission import Ticket
from web.services.submit import commit_then_enqueue
from workers.replays import DatasetError
from workers.replays.uploads import MAX_EXTRACTED_BYTES, MAX_UPLOAD_BYTES, save_raw
from workers.settings import Settings
from workers.store.models import Replay
from workers.tasks import start_replay

# An upload may unpack to this many times the tier's upload cap (and never past MAX_EXTRACTED_BYTES).
EXTRACT_FACTOR = 8


def parse() -> tuple[dict[str, Any], FileStorage | None]:
    """The validated request, and the uploaded file for a multipart body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise ApiError(422, "validation_error", "a multipart replay needs a `file` part", field="file")
        input_guard.check_text(upload.filename, "file")
        return _load(ReplaySpecSchema(), input_guard.loads(request.form.get("spec") or "{}", "spec")), upload
    return _load(ReplayRequestSchema(), input_guard.json_body()), None


def _load(schema, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ApiError(422, "validation_error", "the body must be a JSON object", field="body")
    try:
        return schema.load(raw)
    except ValidationError as exc:
        # The same problem document as flask-smorest's own validation errors (per-field messages).
        abort(422, errors={"form" if request.mimetype == "multipart/form-data" else "json": exc.normalized_messages()})


def request_hash(data: dict[str, Any], upload: FileStorage | None) -> str:
    if upload is None:
        return submit.request_hash(data)
    digest = hashlib.sha256()
    while chunk := upload.stream.read(1 << 20):
        digest.update(chunk)
    upload.stream.seek(0)
    return submit.request_hash({**data, "file": {"name": upload.filename, "sha256": digest.hexdigest()}})


def submit_replay(data: dict[str, Any], upload: FileStorage | None, ticket: Ticket) -> Replay:
    """Submit, honouring Idempotency-Key: the same key and body return the first replay (and this
    request's charge is given back, as it made nothing)."""
    replay = idempotency.submit_once(Replay, lambda: request_hash(data, upload),
                                     lambda key, req_hash: _submit(data, upload, key, req_hash, ticket))
    if replay.id != ticket.replay_id:
        ticket.refund()
    return replay


def _submit(data: dict[str, Any], upload: FileStorage | None, key: str | None, req_hash: str | None,
            ticket: Ticket) -> Replay:
    """Cheap checks, then the dataset (copied under the tier's cap, read by a bounded child), then the
    steps are charged, then the row. The ticket (request unit, slot) was charged before the body was read."""
    settings: Settings = current_app.config["SETTINGS"]
    catalog.require_model(settings, data["model"])
    if data.get("robot_config") is not None:
        try:
            validate_robot_config(data["robot_config"])
        except SafetyConfigError as exc:
            raise ApiError(422, "invalid_robot_config", exc.message, field=exc.field) from None
    ticket.check_queue(data["model"])
    root, path, archive = _locate(settings, data, upload, ticket)
    try:
        dataset, total = _check_dataset(settings, data, root, path, archive, ticket)
        ticket.charge_steps(total, "step_range" if data.get("step_range") else "episodes")
        return _create(settings, ticket, data, dataset, total, key, req_hash)
    except BaseException:
        if upload is not None:
            shutil.rmtree(path.parent, ignore_errors=True)  # nothing keeps an upload we refused
        raise


def _locate(settings: Settings, data: dict[str, Any], upload: FileStorage | None,
            ticket: Ticket) -> tuple[str, Path, str | None]:
    if upload is None:
        return "data", dataset_access.locate(settings, current().customer_name, data["dataset"]["path"]), None
    cap_mb = ticket.principal.max_upload_mb or MAX_UPLOAD_BYTES // 2**20
    try:
        settings.replay_upload_dir.mkdir(parents=True, exist_ok=True)
        raw, archive = save_raw(upload.stream, upload.filename or "", settings.replay_upload_dir, cap_mb * 2**20)
        return "upload", raw, archive
    except DatasetError as exc:
        raise ApiError(422, "invalid_dataset", exc.message, field="file") from None


def _check_dataset(settings: Settings, data: dict[str, Any], root: str, path: Path, archive: str | None,
                   ticket: Ticket) -> tuple[dict[str, Any], int]:
    episodes, step_range = data.get("episodes"), data.get("step_range")
    cap_mb = ticket.principal.max_upload_mb or MAX_UPLOAD_BYTES // 2**20
    answer = dataset_probe.probe(
        path, archive=archive, max_extracted_bytes=min(cap_mb * 2**20 * EXTRACT_FACTOR, MAX_EXTRACTED_BYTES),
        memory_mb=settings.replay_probe_memory_mb, seconds=settings.replay_probe_seconds, episodes=episodes,
        step_range=step_range, instruction=data.get("instruction"),
        field="file" if root == "upload" else "dataset.path")
    # The child's word is taken for what it measured, not for where things are: the dataset's path is ours.
    cameras = {str(c) for c in answer["cameras"]}
    _check_against_model(settings, data, cameras)
    base = settings.replay_upload_dir if root == "upload" else settings.replay_data_root
    final = path if archive is None else path.parent / "dataset"
    rel = str(final.resolve().relative_to(base.resolve()))
    return {"format": str(answer["format"]), "root": root, "path": rel, "episodes": episodes,
            "step_range": step_range, "camera_map": data.get("camera_map"), "cameras": sorted(cameras),
            "robot_type": _printable(answer.get("robot_type"))}, \
        max(1, int(answer["total"]))


def _check_against_model(settings: Settings, data: dict[str, Any], cameras: set[str]) -> None:
    """The camera map against the dataset's cameras and the model's, and the unnorm key against the model's."""
    mapping = data.get("camera_map") or {}
    unknown = sorted(set(mapping) - cameras) if cameras else []
    if unknown:
        raise ApiError(422, "unknown_camera", f"camera_map names camera(s) {unknown} the dataset does not have "
                       f"(it has {sorted(cameras)})", field="camera_map")
    spec = catalog.spec_of(settings, data["model"])
    submit.check_unnorm_key(spec, data.get("unnorm_key"))
    bad = sorted(set(mapping.values()) - set(spec["cameras"])) if spec and spec.get("cameras") else []
    if bad:
        raise ApiError(422, "unknown_camera", f"camera_map maps to {bad}; model {data['model']} has cameras "
                       f"{spec['cameras']}", field="camera_map")


def _printable(name: Any) -> str | None:
    """A dataset's robot name as stored and shown: the customer wrote it, so letters, digits, ' ._-' only."""
    return re.sub(r"[^\w .-]", "", name, flags=re.ASCII)[:64] or None if isinstance(name, str) else None


def judged_by(settings: Settings, data: dict[str, Any], robot_type: str | None) -> dict[str, Any]:
    """Every step is judged: the request's robot_config, else the profile of the dataset's own robot, else
    SAFETY_DEFAULT_ROBOT. A robot the customer did not name is a guess, so its default mode is `monitor`
    (flags every violation, changes no action) unless the request names one. `robot_source` says which."""
    if data.get("robot_config") is not None:
        return {"robot_source": "request"}
    profile = profile_for(robot_type)
    safety = dict(data.get("safety") or {})
    safety["mode"] = safety.get("mode") or "monitor"
    return {"robot_config": {"type": profile or settings.safety_default_robot}, "safety": safety,
            "robot_source": f"dataset ({robot_type})" if profile else "default"}


def _create(settings: Settings, ticket: Ticket, data: dict[str, Any], dataset: dict[str, Any], total: int,
            key: str | None, req_hash: str | None) -> Replay:
    """Write the row, then enqueue its first slice; if the broker refuses, the row goes: nothing half-made.
    The concurrent-replay cap is checked under a per-customer lock held until this row commits."""
    replay_id, inflight_key = ticket.replay_id, ticket.inflight_key
    ticket.check_concurrency(db.session())
    options = {k: data.get(k) for k in ("instruction", "robot_config", "robot_state_source", "safety",
                                        "unnorm_key")} | judged_by(settings, data, dataset.get("robot_type"))
    replay = Replay(id=replay_id, customer_id=uuid.UUID(current().customer_id), model=data["model"], state="queued",
                    dataset=dataset, options=options, total_steps=total, request_id=g.request_id,
                    idempotency_key=key, request_hash=req_hash)
    msg = {"replay_id": str(replay_id), "model": data["model"], "seq": 0, "request_id": g.request_id,
           "inflight_key": inflight_key, "dataset": dataset}
    commit_then_enqueue(replay, lambda: start_replay(msg), "replay")
    return replay
