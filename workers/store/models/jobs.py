"""Jobs (one inference request each) and usage records (one per finished job)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from workers.store.models.base import Base

JOB_STATES = ("queued", "running", "succeeded", "failed", "expired", "canceled")
TERMINAL_STATES = frozenset({"succeeded", "failed", "expired", "canceled"})


class Job(Base):
    """One inference request. Timestamps give the per-stage latencies; images are kept by hash and size."""

    __tablename__ = "jobs"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    kind: Mapped[str] = mapped_column(String(16), default="interactive")  # interactive | replay
    request_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The GPU worker (hostname:pid, as in its heartbeat) that claimed it last: the reaper releases a dead
    # worker's running jobs at once (ops/reaper.py), instead of waiting for their deadlines.
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deadline_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    inference_done_at: Mapped[datetime | None] = mapped_column()
    safety_started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    inference_ms: Mapped[float | None] = mapped_column(Float)
    safety_check_ms: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_jobs_customer_created", "customer_id", "created_at"),
        Index("ix_jobs_idempotency", "customer_id", "idempotency_key", unique=True,
              postgresql_where="idempotency_key IS NOT NULL"),
    )


class UsageRecord(Base):
    """One row per finished job; the unique job_id makes a redelivered task count once."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    final_state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    queue_wait_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    safety_check_ms: Mapped[float | None] = mapped_column(Float)
    total_latency_ms: Mapped[float | None] = mapped_column(Float)
    safety_modified: Mapped[bool] = mapped_column(Boolean, default=False)
    safety_rejected: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text)
