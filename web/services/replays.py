"""Submit a replay: parse (JSON or multipart), check the dataset, admit, write the row, enqueue slice 0.

Everything checkable is checked before anything is queued: the model, the robot config, the dataset's
path (under the allow-listed root, or a safely unpacked upload), its structure and the selection. A bad
dataset is a 422 naming the field or file, with no row written and nothing queued.
"""
from __future__ import annotations

import hashlib
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
from web import input_guard
from web.api.replays.schemas import ReplayRequestSchema, ReplaySpecSchema
from web.auth import current
from web.errors import ApiError
from web.services import admission, catalog, idempotency, submit
from web.services.submit import commit_then_enqueue
from workers.replays import DatasetError, open_dataset, resolve_dataset_path, save_upload
from workers.settings import Settings
from workers.store.models import Replay
from workers.tasks import start_replay
from workers.wire.queues import REPLAY_INFLIGHT_TTL_S, infer_queue


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


def submit_replay(data: dict[str, Any], upload: FileStorage | None) -> Replay:
    """Submit, honouring Idempotency-Key: the same key and body return the first replay."""
    return idempotency.submit_once(Replay, lambda: request_hash(data, upload),
                                   lambda key, req_hash: _submit(data, upload, key, req_hash))


def _submit(data: dict[str, Any], upload: FileStorage | None, key: str | None, req_hash: str | None) -> Replay:
    settings: Settings = current_app.config["SETTINGS"]
    catalog.require_model(settings, data["model"])
    if data.get("robot_config") is not None:
        try:
            validate_robot_config(data["robot_config"])
        except SafetyConfigError as exc:
            raise ApiError(422, "invalid_robot_config", exc.message, field=exc.field) from None
    root, path = _locate(settings, data, upload)
    try:
        dataset, total = _check_dataset(settings, data, root, path)
        replay_id = uuid.uuid4()

        def create(inflight_key: str) -> Replay:
            return _create(settings, replay_id, data, dataset, total, key, req_hash, inflight_key)

        queue = infer_queue(data["model"], "replay")
        return admission.admit_counted(queue, str(replay_id), REPLAY_INFLIGHT_TTL_S, create)
    except BaseException:
        if upload is not None:
            shutil.rmtree(path.parent, ignore_errors=True)  # nothing keeps an upload we refused
        raise


def _locate(settings: Settings, data: dict[str, Any], upload: FileStorage | None) -> tuple[str, Path]:
    try:
        if upload is None:
            return "data", resolve_dataset_path(data["dataset"]["path"], settings.replay_data_root)
        settings.replay_upload_dir.mkdir(parents=True, exist_ok=True)
        return "upload", save_upload(upload.stream, upload.filename or "", settings.replay_upload_dir)
    except DatasetError as exc:
        field = "dataset.path" if upload is None else "file"
        raise ApiError(422, "invalid_dataset", exc.message, field=field) from None


def _check_dataset(settings: Settings, data: dict[str, Any], root: str, path: Path) -> tuple[dict[str, Any], int]:
    episodes, step_range = data.get("episodes"), data.get("step_range")
    try:
        with open_dataset(path, instruction=data.get("instruction")) as ds:
            total = ds.validate(episodes, tuple(step_range) if step_range else None)
            cameras = {c for sel in ds.select(episodes, tuple(step_range) if step_range else None)
                       for c in sel.info.cameras}
            fmt = ds.format
    except DatasetError as exc:
        raise ApiError(422, "invalid_dataset", exc.message, field=exc.field) from None
    _check_against_model(settings, data, cameras)
    base = settings.replay_upload_dir if root == "upload" else settings.replay_data_root
    return {"format": fmt, "root": root, "path": str(path.resolve().relative_to(base.resolve())), "episodes": episodes,
            "step_range": step_range, "camera_map": data.get("camera_map"), "cameras": sorted(cameras)}, total


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


def _create(settings: Settings, replay_id: uuid.UUID, data: dict[str, Any], dataset: dict[str, Any], total: int,
            key: str | None, req_hash: str | None, inflight_key: str) -> Replay:
    """Write the row, then enqueue its first slice; if the broker refuses, the row goes: nothing half-made."""
    options = {k: data.get(k) for k in ("instruction", "robot_config", "robot_state_source", "safety",
                                        "unnorm_key")}
    replay = Replay(id=replay_id, customer_id=uuid.UUID(current().customer_id), model=data["model"], state="queued",
                    dataset=dataset, options=options, total_steps=total, request_id=g.request_id,
                    idempotency_key=key, request_hash=req_hash)
    msg = {"replay_id": str(replay_id), "model": data["model"], "seq": 0, "request_id": g.request_id,
           "inflight_key": inflight_key, "dataset": dataset}
    commit_then_enqueue(replay, lambda: start_replay(msg), "replay")
    return replay
