"""How a finished job's failure is answered on the synchronous doors (web/services/inference.py)."""
from __future__ import annotations

import uuid

import pytest

from web.errors import ApiError
from web.services.inference import raise_for_failure
from workers.store.models import Job


def _failed(state: str, code: str, detail: str = "worker text that must not leak") -> ApiError:
    job = Job(id=uuid.uuid4(), state=state, error={"code": code, "detail": detail})
    with pytest.raises(ApiError) as caught:
        raise_for_failure(job)
    assert caught.value.extra["job_id"] == str(job.id)
    return caught.value


def test_a_job_the_reaper_ended_lost_is_a_503_that_names_it():
    """An outage lost the job's message or worker (issue 22 drills: Redis at maxmemory): the service's failure,
    answered 503 with Retry-After and the job's id, never a 502 and never the worker's text."""
    err = _failed("expired", "lost")
    assert err.status == 503 and err.code == "lost" and err.headers["Retry-After"] == "1"
    assert "must not leak" not in err.detail


def test_a_passed_deadline_stays_a_504_and_bad_input_a_422():
    assert _failed("expired", "deadline_exceeded", "the deadline passed").status == 504
    assert _failed("failed", "invalid_input", "image too small").status == 422
