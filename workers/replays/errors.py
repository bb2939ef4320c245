"""Typed errors for replay datasets. The API maps DatasetError to a 422 problem document."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset that cannot be replayed; `field` names the offending key, file or parameter.

    Raised before anything is queued, so a customer learns about a truncated file or a missing key
    at submission time instead of halfway through a replay.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def reason(exc: BaseException, *paths: object) -> str:
    """A library exception's message without server-side directories: messages reach customers."""
    text = str(exc) or type(exc).__name__
    for path in paths:
        full = str(path)
        name = full.rstrip("/").rsplit("/", 1)[-1]
        text = text.replace(full, name)
    return text
