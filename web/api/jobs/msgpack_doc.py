"""The msgpack form of the inference request body in the OpenAPI document (POST /v1/inference, POST /v1/jobs):
the JSON body's fields, each image also given as its encoded bytes or as a raw array. Documentation only: the
runtime reads both forms with InferenceRequestSchema (web/msgpack_body.py decodes msgpack into its input)."""
from __future__ import annotations

from marshmallow import fields, validate

from web.api.jobs.schemas import InferenceRequestSchema
from web.api.schemas import BASE64

# msgpack-numpy as openpi_client.msgpack_numpy packs an array (its keys may be bin, as openpi writes them, or str).
NDARRAY = {
    "type": "object", "required": ["__ndarray__", "data", "dtype", "shape"],
    "description": "a raw image array, msgpack-numpy as openpi writes it: (H, W, 3) uint8 (also (H, W), (H, W, 1|4) "
                   "or (3, H, W); other integer dtypes with values 0..255). Stored as it came, never re-encoded",
    "properties": {
        "__ndarray__": {"type": "boolean", "enum": [True]},
        "data": {"type": "string", "format": "binary", "description": "the array's bytes, C order (msgpack bin)"},
        "dtype": {"type": "string", "minLength": 1, "maxLength": 16,
                  "description": "numpy dtype string: |u1 (uint8) for an image"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 3},
    },
}
IMAGE = {"anyOf": [
    {"type": "string", "format": "binary", "minLength": 1, "description": "a PNG/JPEG file's bytes (msgpack bin)"},
    NDARRAY,
    {"type": "string", "minLength": 1, "pattern": BASE64, "description": "base64 PNG/JPEG, as in a JSON body"},
]}


class InferenceMsgpackRequestSchema(InferenceRequestSchema):
    """The inference request as a msgpack map (Content-Type application/msgpack or application/x-msgpack): the
    JSON body's fields, where an image may be a raw array or an encoded image's bytes; numeric fields (state,
    rtc.prev_actions) may be arrays too."""

    image = fields.Raw(metadata={"description": "the primary camera's image", **IMAGE})
    images = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)), values=fields.Raw(metadata=IMAGE),
                         validate=validate.Length(min=1, max=8),
                         metadata={"description": "images keyed by camera name, for multi-camera models"})


REQUEST_BODY = {"content": {"application/msgpack": {"schema": InferenceMsgpackRequestSchema}}}
