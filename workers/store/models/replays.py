"""Durable records of batch replays: one `replays` row per request, one `replay_steps` row per step.

They share `Base` with the job tables so one Alembic metadata sees them all. The step table's primary
key is (replay_id, episode, step): a step computed twice (a redelivered slice, a duplicate message) is
written once, and `done_steps` is a count of these rows, never an increment.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from workers.store.models.base import Base

REPLAY_STATES = ("queued", "running", "succeeded", "failed", "canceled")
REPLAY_TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class Replay(Base):
    """One replay of a recorded dataset through a policy.

    dataset: {format, root ("data" | "upload"), path (relative to that root), episodes, step_range, camera_map}
    options: {instruction, robot_config, robot_state_source ("none" | "dataset"), safety: {mode}}
    slice_seq: the number of the slice message that may run next; a stale duplicate message carries an
    older number and is dropped, so a redelivery never forks the chain of slices (replay_store.claim_slice).
    """

    __tablename__ = "replays"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    dataset: Mapped[dict[str, Any]] = mapped_column(JSONB)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB)
    total_steps: Mapped[int] = mapped_column(Integer)
    done_steps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    slice_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    handed_at: Mapped[datetime | None] = mapped_column()  # when slice_seq last advanced
    request_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        Index("ix_replays_customer_created", "customer_id", "created_at"),
        Index("ix_replays_idempotency", "customer_id", "idempotency_key", unique=True,
              postgresql_where="idempotency_key IS NOT NULL"),
    )


class ReplayStep(Base):
    """What the policy predicted at one recorded step, what the safety stage made of it, and the record.

    predicted_action is what the robot would have received (after safety; NULL when rejected or on
    error); raw_action is the policy's own first action, kept so a rejected step can still be studied.
    """

    __tablename__ = "replay_steps"
    replay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("replays.id", ondelete="CASCADE"), primary_key=True)
    episode: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    predicted_action: Mapped[list[float] | None] = mapped_column(JSONB)
    raw_action: Mapped[list[float] | None] = mapped_column(JSONB)
    recorded_action: Mapped[list[float]] = mapped_column(JSONB)
    safety_decision: Mapped[str | None] = mapped_column(String(16))
    safety_flags: Mapped[list[str]] = mapped_column(JSONB, default=list)
    # `<id>@<version>` of the robot profile that judged the step; NULL only where it could not be judged.
    safety_profile: Mapped[str | None] = mapped_column(String(80))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
