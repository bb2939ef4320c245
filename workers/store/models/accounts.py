"""Tiers, customers and API keys: who may call, and how much.

Only the web and the CLI read and write these; workers reference a customer by id alone (usage rows).
"""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from workers.store.models.base import Base


class Tier(Base):
    """Limits per tier; rows an operator can edit. NULL means unlimited."""

    __tablename__ = "tiers"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    requests_per_day: Mapped[int | None] = mapped_column(Integer)
    requests_per_month: Mapped[int | None] = mapped_column(Integer)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    max_replay_steps: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_replays: Mapped[int | None] = mapped_column(Integer)
    max_upload_mb: Mapped[int | None] = mapped_column(Integer)


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    tier: Mapped[str] = mapped_column(ForeignKey("tiers.name"), default="free")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class ApiKey(Base):
    """Only the HMAC digest of a key is stored; `prefix` is a clear lookup handle."""

    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="default")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


