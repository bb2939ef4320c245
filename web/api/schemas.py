"""Shared marshmallow base: unknown fields are an error, so a typo never silently does nothing."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields

from web.api.spec import CONTROL_CLASS
from web.services.deferred import PendingImage

# Standard base64 with padding, as base64.b64decode(validate=True) accepts it.
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# Free text with at least one character that is not white space (and no control characters).
NON_BLANK = f"^[^{CONTROL_CLASS}]*[^\\s{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class JsonFloat(fields.Float):
    """A JSON number, never a numeric string: as strict as the schema's `type: number` (bodies only; query
    strings keep the lenient fields, as their values are always text)."""

    def _validated(self, value):
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._validated(value)


class JsonInteger(fields.Integer):
    """A JSON integer: no numeric strings, no 2.0 (marshmallow's strict mode)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)


class JsonBoolean(fields.Boolean):
    """true or false, not "yes", 1 or "on"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class ImageField(fields.String):
    """A camera image: base64 PNG/JPEG text. In a msgpack body (web/msgpack_body.py) also the encoded bytes as
    they came (msgpack bin) or a raw array that its decoder has checked and wrapped as a PendingImage; JSON has
    no such values, so only a decoder can put them here. Documented as the JSON form (base64 text)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, PendingImage | bytes):  # bytes: Length(min=1) still refuses empty ones
            return value
        return super()._deserialize(value, attr, data, **kwargs)

    def _validate(self, value):
        if not isinstance(value, PendingImage):  # its dtype, shape and size were checked when it was made
            super()._validate(value)
