"""Shared marshmallow base: unknown fields are an error, so a typo never silently does nothing."""
from __future__ import annotations

from marshmallow import RAISE, Schema


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True
