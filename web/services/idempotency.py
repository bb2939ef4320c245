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
T = TypeVar("T")


def key_from_request() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable characters",
                       field=HEADER)
    return key


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
