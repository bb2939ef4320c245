"""Idempotency-Key on POST: the same key and body return the first job; another body is a 422.

Keys are scoped to the customer and stored on the job row (a unique partial index), so they last as
long as the job itself, well beyond the 24 hours clients are promised.
"""
from __future__ import annotations

import uuid

from flask import request
from sqlalchemy import select

from web import db
from web.auth import current
from web.errors import ApiError
from workers.store.models import Job

HEADER = "Idempotency-Key"


def key_from_request() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable characters",
                       field=HEADER)
    return key


def existing(key: str, req_hash: str) -> Job | None:
    job = db.session().execute(select(Job).where(
        Job.customer_id == uuid.UUID(current().customer_id), Job.idempotency_key == key)).scalar_one_or_none()
    if job is not None and job.request_hash != req_hash:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body", field=HEADER)
    return job
