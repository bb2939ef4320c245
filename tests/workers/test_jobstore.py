"""Job transitions against real PostgreSQL: the claim and the one-statement end (state, timings, usage once)."""
from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from web.accounts import service
from workers.store import jobs as store
from workers.store.db import session_scope
from workers.store.models import Job, UsageRecord


def _job(settings, *, deadline_s: float = 30.0) -> str:
    with session_scope(settings.database_url) as s:
        customer = service.create_customer(s, f"cust-{uuid.uuid4().hex[:10]}", "free")
        now = datetime.now(UTC)
        job = Job(customer_id=customer.id, model="openvla-tiny", request_id="req_test", request={},
                  created_at=now - timedelta(milliseconds=40), deadline_at=now + timedelta(seconds=deadline_s))
        s.add(job)
        s.flush()
        return str(job.id)


def _rows(settings, job_id: str) -> tuple[Job, list[UsageRecord]]:
    with session_scope(settings.database_url) as s:
        job = s.get(Job, uuid.UUID(job_id))
        usage = s.execute(select(UsageRecord).where(UsageRecord.job_id == job.id)).scalars().all()
        s.expunge_all()
        return job, list(usage)


def test_claim_then_end_writes_state_timings_and_one_usage_row_with_the_rows_latencies(settings):
    job_id = _job(settings)
    with session_scope(settings.database_url) as s:
        claim = store.claim_for_inference(s, job_id)
    assert claim.state == "run" and claim.deadline_at.tzinfo is not None
    result = {"action": {"values": [0.0] * 7}, "safety": {"decision": "modified", "violations": []}}
    timings = store.StageTimings(inference_ms=12.5, inference_done_at=datetime.now(UTC).timestamp(),
                                 safety_check_ms=0.25)
    with session_scope(settings.database_url) as s:
        settled = store.finish(s, job_id, "succeeded", result=result, timings=timings)
    with session_scope(settings.database_url) as s:  # a redelivered safety task: no second end, no second row
        assert store.finish(s, job_id, "failed", error={"code": "safety_error"}) is None
    job, usage = _rows(settings, job_id)
    # What the waiters are told is what the committed row holds, column for column.
    assert settled is not None
    for key, value in settled.items():
        stored = getattr(job, key)
        assert (stored.isoformat() if hasattr(stored, "isoformat") else stored) == value, key
    assert (job.state, job.result, job.error, job.attempts) == ("succeeded", result, None, 1)
    assert (job.inference_ms, job.safety_check_ms) == (12.5, 0.25)
    assert job.inference_done_at == job.safety_started_at is not None
    [row] = usage
    latencies = store.latencies(job)
    assert (row.final_state, row.safety_modified, row.safety_rejected, row.detail) == ("succeeded", True, False, None)
    assert row.queue_wait_ms == latencies["queue_wait_ms"] and row.queue_wait_ms >= 40.0
    assert row.total_latency_ms == latencies["total_latency_ms"]
    assert (row.inference_ms, row.safety_check_ms) == (12.5, 0.25)


def test_a_failure_without_timings_keeps_null_result_and_counts_its_code(settings):
    job_id = _job(settings)
    with session_scope(settings.database_url) as s:
        assert store.finish(s, job_id, "failed", error={"code": "inference_error", "detail": "x"}) is not None
    job, [row] = _rows(settings, job_id)
    assert (job.state, job.result, job.inference_ms, job.started_at) == ("failed", None, None, None)
    assert (row.detail, row.queue_wait_ms, row.inference_ms) == ("inference_error", None, None)
    with session_scope(settings.database_url) as s:  # a finished job is not claimed again
        assert store.claim_for_inference(s, job_id).state == "failed"


def test_a_claim_past_the_deadline_expires_the_job_once(settings):
    job_id = _job(settings, deadline_s=-1.0)
    with session_scope(settings.database_url) as s:
        assert store.claim_for_inference(s, job_id).state == "expired"
    job, [row] = _rows(settings, job_id)
    assert (job.state, job.error["code"], row.final_state) == ("expired", "deadline_exceeded", "expired")
    with session_scope(settings.database_url) as s:
        assert store.claim_for_inference(s, str(uuid.uuid4())).state == "missing"


def test_racing_ends_end_a_job_exactly_once(settings):
    job_id = _job(settings)
    wins: list[bool] = []
    start = threading.Barrier(8)

    def end(state: str) -> None:
        start.wait()
        with session_scope(settings.database_url) as s:
            wins.append(store.finish(s, job_id, state, error={"code": state}) is not None)

    threads = [threading.Thread(target=end, args=(st,)) for st in ("failed", "expired", "canceled", "succeeded") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job, usage = _rows(settings, job_id)
    assert sorted(wins) == [False] * 7 + [True]
    assert len(usage) == 1 and usage[0].final_state == job.state


def test_a_large_result_is_stored_with_lz4_where_the_server_has_it(settings):
    """Migration 0006: a pi0 result (~38 KB) is TOASTed on every job's final UPDATE; lz4 where the server was
    built with it (pglz otherwise), and the value reads back the same either way."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with session_scope(settings.database_url) as s:
        probe = s.begin_nested()  # rolled back either way: the probe table never outlives it on a pooled connection
        try:
            s.execute(text("CREATE TEMP TABLE lz4_probe (v text COMPRESSION lz4)"))
            has_lz4 = True
        except DBAPIError:
            has_lz4 = False
        probe.rollback()
        method = s.execute(text("SELECT attcompression FROM pg_attribute WHERE attrelid = 'jobs'::regclass "
                                "AND attname = 'result'")).scalar_one()
    assert method == ("l" if has_lz4 else "")
    job_id = _job(settings)
    chunk = [[0.1234567890123 * (i + j) for j in range(7)] for i in range(50)]
    result = {"action": {"values": chunk}, "safety": {"decision": "allowed", "original_actions": chunk,
                                                      "violations": [{"message": f"step {i}"} for i in range(50)]}}
    with session_scope(settings.database_url) as s:
        store.claim_for_inference(s, job_id)
        assert store.finish(s, job_id, "succeeded", result=result) is not None
    with session_scope(settings.database_url) as s:
        stored, compressed = s.execute(text("SELECT result, pg_column_compression(result) FROM jobs WHERE id = :id"),
                                       {"id": job_id}).one()
    assert stored == result
    assert compressed == ("lz4" if has_lz4 else "pglz")
