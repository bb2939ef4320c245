"""Charge a replay first, then let it work, and refund everything if it is refused.

Before the body is read: one request unit (per-minute rate, day and month quotas), an in-flight slot, and
the tier's concurrent-replay cap. After the dataset has been checked (in a bounded child process): the
tier's step cap, then the steps themselves against the day and month quotas, ceil(steps /
REPLAY_STEPS_PER_UNIT) units (the per-minute rate counts requests, not steps). The concurrent-replay cap is
checked again, atomically, when the row is written. Any refusal after a charge gives every unit back and
frees the slot.
"""
from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import current_app, g
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from web.auth import Principal, current
from web.errors import ApiError
from web.metrics import queue_depth
from web.ratelimit.decision import Decision, Limits
from web.ratelimit.inflight import InFlight
from web.ratelimit.limiter import RateLimiter
from web.services import admission
from workers.settings import Settings
from workers.store.models import Replay
from workers.wire import notify, telemetry
from workers.wire.queues import REPLAY_INFLIGHT_TTL_S, infer_queue

ACTIVE = ("queued", "running")


@dataclass
class Ticket:
    principal: Principal
    settings: Settings
    replay_id: uuid.UUID = field(default_factory=uuid.uuid4)
    request_decision: Decision | None = None
    step_decision: Decision | None = None
    step_units: int = 0
    leased: bool = False

    def _redis(self):
        return notify.client(self.settings.redis_url)

    def _limits(self, *, steps: bool = False) -> Limits:
        p = self.principal
        return Limits(per_minute=None if steps else p.per_minute, per_day=p.per_day, per_month=p.per_month)

    @property
    def inflight_key(self) -> str:
        return InFlight(self._redis()).key(self.principal.customer_id)

    def charge_request(self) -> None:
        """One request unit and an in-flight slot, and the concurrent-replay cap (a first, cheap look)."""
        p, r = self.principal, self._redis()
        decision = RateLimiter(r).hit(p.customer_id, self._limits())
        g.extra_headers, g.usage = decision.headers(), decision.usage_block(p.tier)
        if not decision.allowed:
            telemetry.refused(r, "rate" if decision.refused_by in (None, "minute") else "quota")
            raise admission.rate_limited(decision)
        self.request_decision = decision
        if not InFlight(r).acquire(p.customer_id, str(self.replay_id), p.max_in_flight, REPLAY_INFLIGHT_TTL_S):
            telemetry.refused(r, "in_flight")
            raise ApiError(429, "too_many_in_flight", f"at most {p.max_in_flight} jobs and replays may be in "
                           "flight for this customer; wait for one to finish", headers={"Retry-After": "1"})
        self.leased = True
        from web import db

        self.check_concurrency(db.session(), lock=False)

    def check_concurrency(self, session: Session, *, lock: bool = True) -> None:
        """The tier's cap on queued and running replays; with `lock`, serialised per customer until commit."""
        cap = self.principal.max_concurrent_replays
        if not cap:
            return
        cid = uuid.UUID(self.principal.customer_id)
        if lock:
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"replays:{cid}"})
        active = session.execute(select(func.count()).select_from(Replay).where(
            Replay.customer_id == cid, Replay.state.in_(ACTIVE))).scalar_one()
        if active >= cap:
            telemetry.refused(self._redis(), "replay_concurrency")
            raise ApiError(429, "too_many_replays", f"the {self.principal.tier} tier runs at most {cap} replay(s) "
                           "at a time; wait for one to finish", headers={"Retry-After": "10"})

    def check_queue(self, model: str) -> None:
        queue = infer_queue(model, "replay")
        if queue_depth(self._redis(), queue) >= self.settings.max_queue_depth:
            telemetry.refused(self._redis(), "queue_full")
            raise ApiError(503, "queue_full", f"the {queue} queue is full; retry shortly", headers={"Retry-After": "2"})

    def charge_steps(self, total: int, field_name: str) -> None:
        """The tier's step cap, then ceil(total / REPLAY_STEPS_PER_UNIT) units against the day and month."""
        p = self.principal
        if p.max_replay_steps and total > p.max_replay_steps:
            telemetry.refused(self._redis(), "replay_steps")
            raise ApiError(422, "replay_too_long", f"this replay has {total} steps; the {p.tier} tier allows "
                           f"{p.max_replay_steps} per replay: select fewer episodes or a step_range",
                           field=field_name, steps=total, max_steps=p.max_replay_steps)
        units = math.ceil(total / self.settings.replay_steps_per_unit)
        decision = RateLimiter(self._redis()).hit(p.customer_id, self._limits(steps=True), cost=units)
        if not decision.allowed:
            telemetry.refused(self._redis(), "quota")
            raise ApiError(429, "quota_exceeded", f"this replay costs {units} units ({total} steps); the "
                           f"{decision.refused_by or 'day'} quota has not that many left",
                           headers=decision.headers(), usage=decision.usage_block(p.tier), cost=units)
        self.step_decision, self.step_units = decision, units
        g.usage = decision.usage_block(p.tier)

    def refund(self) -> None:
        """Give back every unit charged and the in-flight slot (idempotent)."""
        p, r = self.principal, self._redis()
        limiter = RateLimiter(r)
        if self.step_decision is not None:
            limiter.refund(p.customer_id, self._limits(steps=True), cost=self.step_units,
                           decision=self.step_decision)
            self.step_decision = None
        if self.request_decision is not None:
            limiter.refund(p.customer_id, self._limits(), decision=self.request_decision)
            self.request_decision = None
        if self.leased:
            InFlight(r).release(p.customer_id, str(self.replay_id))
            self.leased = False


@contextmanager
def charged() -> Iterator[Ticket]:
    """Charge the caller for one replay submission; refund all of it if the block raises."""
    ticket = Ticket(current(), current_app.config["SETTINGS"])
    try:
        ticket.charge_request()
        yield ticket
    except BaseException:
        ticket.refund()
        raise
