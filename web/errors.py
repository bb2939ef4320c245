"""Errors are RFC 9457 problem documents: type, title, status, detail, request_id (and the field)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import kombu.exceptions
import redis
import sqlalchemy.exc
from flask import Response, current_app, g, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://docs.vlaapi.dev/problems/"
T = TypeVar("T")

# Driver errors that mean "a backing service is down or busy", never "bad input": every door (REST, /act, the
# openpi websocket) answers them 503 with Retry-After. One tuple, so the doors cannot drift apart.
# sqlalchemy.exc.TimeoutError: the connection pool had no connection free in time (overload, not input).
# Redis answers some outages as errors, not disconnects: OOM at maxmemory with noeviction, READONLY from a replica
# that was the primary before a failover, MASTERDOWN from a replica cut off from its primary (all ResponseError
# subclasses, so they must be named: a plain ResponseError is a bug). BusyLoadingError is a ConnectionError.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
    redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError,
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)


def is_backend_error(exc: BaseException) -> bool:
    """BACKEND_ERRORS, and the driver errors no class can name: psycopg2 reports a connection that died under
    a statement as a bare DatabaseError when libpq had not yet marked it bad, which SQLAlchemy wraps as
    sqlalchemy.exc.DatabaseError with `connection_invalidated` set (the workers' retry.is_transient agrees).
    A DataError or IntegrityError on a live connection stays what it is."""
    if isinstance(exc, BACKEND_ERRORS):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


class ApiError(Exception):
    """Raised anywhere in a request to answer with a problem document."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.headers = headers or {}
        self.extra = extra


class AcceptedError(ApiError):
    """Something failed after the job's row was committed: the job exists and may still complete, so the answer
    is a 503 that carries its id and Location (never "nothing happened"). Admission neither refunds its unit nor
    frees its in-flight slot: the job is charged when it ends, and its end frees the slot."""

    def __init__(self, job_id: str, detail: str, *, state: str | None = None):
        super().__init__(503, "accepted_wait_failed", detail, job_id=job_id, state=state,
                         location=f"/v1/jobs/{job_id}",
                         headers={"Location": f"/v1/jobs/{job_id}", "Retry-After": "1"})


def accepted_wait_failed(job_id: str, error: BaseException, state: str | None = None) -> AcceptedError:
    log.error("job %s accepted; answering without its outcome: %s: %s", job_id, type(error).__name__, error)
    return AcceptedError(job_id, f"job {job_id} was accepted and may still complete, but its outcome could not be "
                         "awaited (a backing service is unreachable or busy); fetch it at the Location given, or "
                         "retry with the same Idempotency-Key", state=state)


def best_effort(fn: Callable[[], T], what: str) -> T | None:
    """fn() for a step that is not the answer (a refund, a usage read, a wake-up): an error in it is logged once
    and swallowed, so it never replaces the answer the request already has (a 503, a result, a 202)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the first answer wins; this error is only logged
        log.warning("%s failed (the answer stands): %s: %s", what, type(exc).__name__, exc)
        return None


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail,
            "request_id": getattr(g, "request_id", None)}
    body.update({k: v for k, v in extra.items() if v is not None})
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = "application/problem+json"
    return resp


def from_http_exception(error: HTTPException) -> Response:
    """Werkzeug/webargs errors: 404, 405, 415, and 422 validation errors with per-field messages."""
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    locations = {"json", "json_or_msgpack", "query", "form", "files", "headers", "view_args"}  # webargs' keys
    if isinstance(errors, dict) and set(errors) <= locations:
        errors = {k: v for loc in errors.values() for k, v in (loc.items() if isinstance(loc, dict) else [])}
    code = (error.name or "error").lower().replace(" ", "_")
    if error.code == 422:
        code = "validation_error"
    detail = data.get("message") or error.description or error.name
    if errors:
        fields = ", ".join(sorted(map(str, errors)))
        detail = f"invalid request: {fields}"
    resp = problem(error.code or 500, code, error.name, detail, errors=errors)
    for k, v in (data.get("headers") or {}).items():
        resp.headers[k] = v
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        resp.headers["Allow"] = ", ".join(sorted(error.valid_methods))  # RFC 9110 §15.5.6: a 405 says what is
    return resp


def from_api_error(error: ApiError) -> Response:
    errors = {error.field: [error.detail]} if error.field else None
    resp = problem(error.status, error.code, error.code.replace("_", " ").capitalize(), error.detail,
                   field=error.field, errors=errors, **error.extra)
    resp.headers.update(error.headers)
    return resp


def from_backend_down(error: Exception) -> Response:
    """PostgreSQL or Redis unreachable: the client should retry, and nothing was half-written (every write
    is one transaction or one Redis call)."""
    log.error("backend unavailable: %s: %s", type(error).__name__, error)
    resp = problem(503, "backend_unavailable", "Service Unavailable",
                   "a backing service (database or queue) is unreachable or busy; retry shortly")
    resp.headers["Retry-After"] = "2"
    return resp


def from_unstorable(error: Exception) -> Response:
    """A value PostgreSQL refuses (out of a column's range, bytes it cannot store): the input guard should have
    caught it, so log it as a gap in the guard, but the client still sent it: a 422, not a 500."""
    # The type only: the traceback would carry the statement's parameters (customer data) into the log.
    log.warning("database refused a value: %s", type(error).__name__)
    return problem(422, "invalid_value", "Unprocessable Content", "a value in this request cannot be stored")


def from_unexpected(error: Exception) -> Response:
    if is_backend_error(error):  # a class no handler can be registered for (see is_backend_error)
        return from_backend_down(error)
    # A 500 is a bug: log it with the request id, never leak the traceback to the client.
    log.exception("unhandled error")
    if current_app.config.get("PROPAGATE_EXCEPTIONS"):
        raise error
    return problem(500, "internal_error", "Internal Server Error",
                   "an unexpected error occurred; quote the request_id when reporting it")
