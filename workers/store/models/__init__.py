"""The durable records in PostgreSQL, one module per room; import the names from here.

They live in `workers` (not `web`) because workers write jobs, usage and replay steps, and `workers` never
imports `web`; accounts sit beside them so one metadata (and one Alembic history) covers every table.
"""
from workers.store.models.accounts import ApiKey, Customer, Tier
from workers.store.models.base import Base
from workers.store.models.jobs import JOB_STATES, TERMINAL_STATES, Job, UsageRecord
from workers.store.models.replays import REPLAY_STATES, REPLAY_TERMINAL, Replay, ReplayStep

__all__ = ["ApiKey", "Base", "Customer", "JOB_STATES", "Job", "REPLAY_STATES", "REPLAY_TERMINAL", "Replay",
           "ReplayStep", "TERMINAL_STATES", "Tier", "UsageRecord"]
