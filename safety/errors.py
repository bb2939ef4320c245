"""Typed errors of the safety library.

The caller (the Celery safety task and the web edge) maps these to HTTP statuses; the library never returns
a half-evaluated result, it raises one of these instead, so the pipeline fails closed.
"""

from __future__ import annotations


class SafetyError(Exception):
    """Base class: anything the safety stage raises on purpose."""


class SafetyConfigError(SafetyError, ValueError):
    """A robot_config, profile, mode, option or action_stats value is invalid (the web layer answers 422)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class UnknownProfileError(SafetyConfigError):
    """The requested robot type has no profile; the message carries close-name suggestions."""


class AlignmentCheckLoadError(SafetyConfigError):
    """An alignment-check plugin could not be imported, constructed or its weights loaded."""
