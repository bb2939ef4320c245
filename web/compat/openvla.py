"""OpenVLA's `POST /act` (openvla/openvla `vla-scripts/deploy.py`), served by the same admission path.

deploy.py takes a json-numpy body {"image": np.ndarray (H, W, 3) uint8, "instruction": str, "unnorm_key":
optional str} and answers with the action array itself, json-numpy encoded (shape (7,) for OpenVLA; (T, D)
for a chunk model). A client that cannot install json-numpy sends {"encoded": "<json-numpy text>"} and gets
the json-numpy text back as a JSON string; both forms work here. The key goes in the Authorization header
(`Bearer <key>` or `Api-Key <key>`). Unlike deploy.py, which answers a bad request with the string "error"
and status 200, failures here are problem documents with a 4xx/5xx status.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, request

from web.auth import authenticate
from web.compat.arrays import ArrayError, image_png_b64, json_numpy_encode, json_numpy_hook
from web.errors import ApiError
from web.services import catalog, inference

blp = Blueprint("openvla_compat", __name__)

# Fields of POST /v1/inference a deploy.py-style body may carry besides image and instruction.
PASSTHROUGH = ("unnorm_key", "deadline_ms", "seed", "robot_config", "robot_state", "safety", "state")


@blp.post("/act")
def act_default() -> Response:
    """deploy.py's URL: the model named in the body, else the first enabled model."""
    return _act(catalog.enabled_models(current_app.config["SETTINGS"])[0])


@blp.post("/openvla/<model>/act")
def act_model(model: str) -> Response:
    return _act(model)


def _act(model: str) -> Response:
    authenticate()  # outside /v1, so the app's before_request hook did not
    payload, double_encoded = _read_body()
    body = _rest_body(payload, model)
    job = inference.submit_and_wait(inference.load_request(body))
    values = np.asarray(inference.final_action(job)["values"], dtype=np.float64)
    encoded = json_numpy_encode(values)
    out = json.dumps(json.dumps(encoded) if double_encoded else encoded)
    return Response(out, status=200, mimetype="application/json")


def _read_body() -> tuple[dict[str, Any], bool]:
    try:
        payload = json.loads(request.get_data(cache=False) or b"null", object_hook=json_numpy_hook)
        double_encoded = isinstance(payload, dict) and "encoded" in payload
        if double_encoded:
            if len(payload) != 1 or not isinstance(payload["encoded"], str):
                raise ArrayError("an 'encoded' body carries nothing else")
            payload = json.loads(payload["encoded"], object_hook=json_numpy_hook)
    except (ArrayError, ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_body", f"not a json-numpy body: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_body", "the body must be an object {'image': ndarray, 'instruction': str}")
    return payload, double_encoded


def _rest_body(payload: dict[str, Any], model: str) -> dict[str, Any]:
    unknown = sorted(set(payload) - {"image", "instruction", "model", *PASSTHROUGH})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field(s) {unknown}; /act takes image, instruction and "
                       f"optionally {', '.join(('model',) + PASSTHROUGH)}", field=unknown[0])
    if "image" not in payload:
        raise ApiError(422, "validation_error", "image is required (an (H, W, 3) uint8 array)", field="image")
    body = {k: _plain(payload[k]) for k in PASSTHROUGH if k in payload}
    body.update(model=payload.get("model", model), instruction=payload.get("instruction"),
                image=image_png_b64(payload["image"], "image"))
    return body


def _plain(value: Any) -> Any:
    """json-numpy may carry a state or bounds as arrays; the REST schema wants lists and plain numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
