"""Idempotency-Key on POST: the same key and body return the first job or replay; another body is a 422.

Keys are scoped to the customer and stored on the job or replay row (a unique partial index), so they last as
long as the job itself, well beyond the 24 hours clients are promised.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

from flask import request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from web import db
from web.auth import current
from web.errors import ApiError

HEADER = "Idempotency-Key"
# The openpi websocket has no per-message headers: a message's key travels in its observation, under this name.
OBSERVATION_KEY = "vlaapi_idempotency_key"
T = TypeVar("T")


def key_from_request() -> str | None:
    key = request.headers.get(HEADER)
    return None if key is None else _checked(key, HEADER)


def _checked(key: str, field: str) -> str:
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(422, "invalid_idempotency_key", f"{field} must be 1 to 255 printable characters", field=field)
    return key


def observation_header(obs: object) -> dict[str, str]:
    """An openpi observation's optional `vlaapi_idempotency_key` (a string), as the Idempotency-Key header of the
    request its message runs as; the key stays in the observation, which no layout reads under that name."""
    if not isinstance(obs, dict):
        return {}
    raw = obs.get(OBSERVATION_KEY, obs.get(OBSERVATION_KEY.encode()))
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        raise ApiError(422, "invalid_idempotency_key", f"{OBSERVATION_KEY} must be a string", field=OBSERVATION_KEY)
    return {HEADER: _checked(raw, OBSERVATION_KEY)}


def existing(model: type[T], key: str, req_hash: str) -> T | None:
    """The caller's row of `model` (Job, Replay) made with this key; 422 if it was made from another body."""
    row = db.session().execute(select(model).where(
        model.customer_id == uuid.UUID(current().customer_id), model.idempotency_key == key)).scalar_one_or_none()
    if row is not None and row.request_hash != req_hash:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body", field=HEADER)
    return row


def submit_once(model: type[T], body_hash: Callable[[], str],
                create: Callable[[str | None, str | None], T]) -> T:
    """Create through `create(key, request_hash)` unless this Idempotency-Key already made a row of `model`.

    Without the header every request creates. Two concurrent requests with one key meet at the unique
    index: the loser rolls back and answers with the winner's row."""
    key = key_from_request()
    if key is None:
        return create(None, None)
    req_hash = body_hash()
    found = existing(model, key, req_hash)
    if found is not None:
        return found
    try:
        return create(key, req_hash)
    except IntegrityError:
        db.session().rollback()
        found = existing(model, key, req_hash)
        if found is None:
            raise
        return found
