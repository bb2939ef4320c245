"""Typed policy errors. The API maps PolicyInputError to 422 and ModelNotFound to 404."""
from __future__ import annotations


class PolicyError(Exception):
    """Base class of everything a policy raises on purpose."""


class PolicyInputError(PolicyError, ValueError):
    """A request the policy cannot serve; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownUnnormKey(PolicyInputError):
    def __init__(self, key: str | None, valid: list[str]):
        what = "no unnorm_key given and the checkpoint has several" if key is None else f"unknown unnorm_key {key!r}"
        super().__init__("unnorm_key", f"{what}; valid keys: {', '.join(valid)}")
        self.valid = valid


class ModelNotFound(PolicyError, LookupError):
    def __init__(self, name: str, suggestions: list[str], known: list[str]):
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown model {name!r}{hint} (known: {', '.join(known)})")
        self.name = name
        self.suggestions = suggestions


class CheckpointError(PolicyError):
    """A checkpoint directory that is missing, incomplete or does not match its architecture."""


class PolicySelfCheckError(PolicyError):
    """The load-time self-check found the serving path disagreeing with its reference computation
    (cached decode vs full recompute, batch vs singles): the worker must refuse to serve. `check` names
    which comparison failed; the message carries the measured difference and the tolerance."""

    def __init__(self, model: str, check: str, detail: str):
        super().__init__(f"{model}: self-check {check!r} failed: {detail}")
        self.model = model
        self.check = check
        self.detail = detail
