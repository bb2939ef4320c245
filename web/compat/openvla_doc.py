"""The OpenAPI description of OpenVLA's `/act` door: its json-numpy body written as JSON Schema (the two forms
deploy.py takes), so /docs shows it and schemathesis exercises it like every other operation."""
from __future__ import annotations

import base64

from marshmallow import fields, validate

from web.api.jobs.schemas import InferenceRequestSchema
from web.api.schemas import BASE64, NON_BLANK, StrictSchema

MAX_DIMS = 4  # web/compat/arrays.py


class JsonNumpyArraySchema(StrictSchema):
    """An array as json-numpy writes it: the raw bytes in base64, their dtype (numeric only) and shape."""

    data = fields.String(required=True, data_key="__numpy__", metadata={"pattern": BASE64,
                         "description": "the array's raw bytes, C order, base64"})
    dtype = fields.String(required=True, validate=validate.Length(min=1, max=16),
                          metadata={"description": "numpy dtype string: |u1 for an image, <f4, <f8, <i8, ..."})
    shape = fields.List(fields.Integer(validate=validate.Range(min=0)), required=True,
                        validate=validate.Length(max=MAX_DIMS), metadata={"description": "(H, W, 3) for an image"})


_REST = InferenceRequestSchema._declared_fields
_PASSTHROUGH = ("unnorm_key", "deadline_ms", "seed", "robot_config", "robot_state", "safety", "state")
_EXAMPLE_IMAGE = {"__numpy__": base64.b64encode(bytes(8 * 8 * 3)).decode(), "dtype": "|u1", "shape": [8, 8, 3]}


class ActRequestSchema(StrictSchema):
    """deploy.py's body: an (H, W, 3) uint8 image and an instruction; optionally the fields of POST
    /v1/inference (numeric arrays there may also be json-numpy objects)."""

    OPENAPI_EXTRA = {"example": {"image": _EXAMPLE_IMAGE, "instruction": "pick up the red block",
                                 "unnorm_key": "bridge_orig"}}

    image = fields.Nested(JsonNumpyArraySchema, required=True)
    instruction = fields.String(required=True, validate=validate.Length(min=1, max=2000),
                                metadata={"pattern": NON_BLANK})
    model = fields.String(validate=validate.Length(min=1, max=100),
                          metadata={"description": "on /act only: the model (default: the first enabled one)"})
    for _name in _PASSTHROUGH:
        locals()[_name] = _REST[_name]
    del _name


class ActEncodedRequestSchema(StrictSchema):
    """deploy.py's form for clients without json-numpy: the json-numpy text of the body, as a JSON string
    (answered with the action's json-numpy text as a JSON string)."""

    encoded = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"description": "json-numpy text of an ActRequest"})


REQUEST_BODY = {
    "required": True,
    "description": "json-numpy (any Content-Type is read as such, text/plain included)",
    "content": {"application/json": {"schema": {"oneOf": [ActRequestSchema, ActEncodedRequestSchema]}}},
}
RESPONSES = {
    "200": {"description": "The safety-checked action as a json-numpy array ((7,) for OpenVLA, (T, D) for a "
                           "chunk model), or its json-numpy text as a string for an `encoded` body",
            "content": {"application/json": {"schema": {"oneOf": [JsonNumpyArraySchema, {"type": "string"}]}}}},
    "504": "DEFAULT_ERROR",
    "default": "DEFAULT_ERROR",
}
DOC = {"requestBody": REQUEST_BODY, "responses": RESPONSES}
