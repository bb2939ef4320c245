"""Typed errors, each carrying the service's problem document (RFC 9457: type, title, status, detail,
request_id, and often field)."""
from __future__ import annotations

from typing import Any


class VLAError(Exception):
    """Any refusal by the service. `problem` is its problem document; `status` the HTTP status (0 when the
    service could not be reached); `retry_after` seconds when the service said when to come back."""

    def __init__(self, status: int, problem: dict[str, Any] | None = None, retry_after: float | None = None,
                 message: str | None = None):
        self.status = status
        self.problem = problem or {}
        self.retry_after = retry_after
        super().__init__(message or self._message())

    @property
    def code(self) -> str:
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1] or "error"

    @property
    def request_id(self) -> str | None:
        return self.problem.get("request_id")

    @property
    def field(self) -> str | None:
        return self.problem.get("field")

    def _message(self) -> str:
        field = f" ({self.field})" if self.field else ""
        rid = f" [request_id {self.request_id}]" if self.request_id else ""
        return f"HTTP {self.status} {self.code}: {self.problem.get('detail', '')}{field}{rid}"


class AuthError(VLAError):
    """401/403: the key is missing, malformed, unknown, revoked, or its customer is disabled."""


class InvalidRequest(VLAError):
    """400/409/413/415/422: the request cannot be served as sent; retrying it unchanged will not help."""


class NotFound(VLAError):
    """404: no such job or replay for this key."""


class RateLimited(VLAError):
    """429: a rate limit, quota or in-flight cap; `retry_after` says when to try again."""


class Unavailable(VLAError):
    """503 (queue full, backend or model unavailable) or the service unreachable (status 0)."""


class DeadlineExceeded(VLAError):
    """504: the deadline passed before an action was ready. No action was returned, by design."""


class ServerError(VLAError):
    """Any other 5xx: quote `request_id` when reporting it."""


class ActionRejected(VLAError):
    """The safety stage rejected the action (mode `reject`): the response carries no action. `problem`
    holds the safety block (violations, flags)."""


def from_status(status: int, problem: dict[str, Any], retry_after: float | None) -> VLAError:
    if status in (401, 403):
        cls: type[VLAError] = AuthError
    elif status == 404:
        cls = NotFound
    elif status == 429:
        cls = RateLimited
    elif status == 503:
        cls = Unavailable
    elif status == 504:
        cls = DeadlineExceeded
    elif 400 <= status < 500:
        cls = InvalidRequest
    else:
        cls = ServerError
    return cls(status, problem, retry_after)
