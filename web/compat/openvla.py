"""OpenVLA's `POST /act` (openvla/openvla `vla-scripts/deploy.py`), served by the same admission path.

deploy.py takes a json-numpy body {"image": np.ndarray (H, W, 3) uint8, "instruction": str, "unnorm_key":
optional str} and answers with the action array itself, json-numpy encoded (shape (7,) for OpenVLA; (T, D)
for a chunk model). A client that cannot install json-numpy sends {"encoded": "<json-numpy text>"} and gets
the json-numpy text back as a JSON string; both forms work here, whatever the Content-Type. The key goes in
the Authorization header (`Bearer <key>` or `Api-Key <key>`), checked by the app before the body is read
(web/app.py). Unlike deploy.py, which answers a bad request with the string "error" and status 200, failures
here are problem documents with a 4xx/5xx status.

Every body form goes through the input guard's rules (web/input_guard.py) and the REST schema; the image is
converted only after the request has been counted (web/services/deferred.py), so a customer over its limits
gets 429 before any image work.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import Response, current_app, request

from web import input_guard
from web.compat import openvla_doc
from web.compat.arrays import ArrayError, json_numpy_encode, json_numpy_hook, pending_image
from web.errors import ApiError
from web.extensions import Blueprint
from web.services import admission, catalog, inference

blp = Blueprint("openvla_compat", __name__, description="OpenVLA's deploy.py protocol (json-numpy bodies)")
ENDPOINTS = frozenset({"openvla_compat.act_default", "openvla_compat.act_model"})  # need a key (web/app.py)

# Fields of POST /v1/inference a deploy.py-style body may carry besides image and instruction.
PASSTHROUGH = ("unnorm_key", "deadline_ms", "seed", "robot_config", "robot_state", "safety", "state")


@blp.route("/act", methods=["POST"])
@blp.doc(**openvla_doc.DOC)
def act_default() -> Response:
    """An action for one json-numpy image and instruction (deploy.py's URL; model: the body's, else the first)."""
    return _act(catalog.enabled_models(current_app.config["SETTINGS"])[0])


@blp.route("/openvla/<model>/act", methods=["POST"])
@blp.doc(**openvla_doc.DOC)
def act_model(model: str) -> Response:
    """deploy.py's protocol for the model named in the path."""
    return _act(model)


def _act(model: str) -> Response:
    # A json-numpy body is costly to read and decode (up to ~17 MB of base64): over its limits, 429 unread.
    admission.refuse_if_over_limit()
    payload, double_encoded = _read_body()
    body = _rest_body(payload, model)
    job = inference.submit_and_wait(inference.load_request(body))
    values = np.asarray(inference.final_action(job)["values"], dtype=np.float64)
    encoded = json_numpy_encode(values)
    out = json.dumps(json.dumps(encoded) if double_encoded else encoded)
    return Response(out, status=200, mimetype="application/json")


def _read_body() -> tuple[dict[str, Any], bool]:
    """The body as json-numpy, whatever its Content-Type; bounded before parsing (input_guard.precheck) and
    checked after, inner body of the `encoded` form included, by the guard's rules."""
    raw = request.get_data(cache=False) or b"null"
    try:
        input_guard.precheck(raw)
        payload = json.loads(raw, object_hook=json_numpy_hook)
        double_encoded = isinstance(payload, dict) and "encoded" in payload
        if double_encoded:
            if len(payload) != 1 or not isinstance(payload["encoded"], str):
                raise ArrayError("an 'encoded' body carries nothing else")
            input_guard.precheck(payload["encoded"], "encoded")
            payload = json.loads(payload["encoded"], object_hook=json_numpy_hook)
    except (ArrayError, ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_body", f"not a json-numpy body: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_body", "the body must be an object {'image': ndarray, 'instruction': str}")
    input_guard.check_value(payload)
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
                image=pending_image(payload["image"], "image"))  # converted once the request is counted
    return body


def _plain(value: Any) -> Any:
    """json-numpy may carry a state or bounds as arrays; the REST schema wants lists and plain numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
