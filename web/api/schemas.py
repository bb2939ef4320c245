"""Shared marshmallow base: unknown fields are an error, so a typo never silently does nothing."""
from __future__ import annotations

from marshmallow import RAISE, Schema

from web.api.spec import CONTROL_CLASS

# Standard base64 with padding, as base64.b64decode(validate=True) accepts it.
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# Free text with at least one character that is not white space (and no control characters).
NON_BLANK = f"^[^{CONTROL_CLASS}]*[^\\s{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True
