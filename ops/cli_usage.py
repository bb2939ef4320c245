"""`vlaapi usage CUSTOMER`: what a customer has used, for an operator answering "why was I limited?".

Two sources, because they answer different questions: the live counters the web enforces (Redis: this
minute, today, this month, against the tier's limits: what GET /v1/usage shows the customer), and the
durable record of finished jobs (PostgreSQL usage_records: per model and outcome, with latencies).
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from web.accounts import service
from web.ratelimit.decision import Limits
from web.ratelimit.limiter import RateLimiter
from workers.settings import get_settings
from workers.store.db import session_scope
from workers.store.models import Tier, UsageRecord
from workers.wire import notify


def live_counters(customer_id: str, tier: Tier) -> dict[str, Any]:
    limits = Limits(per_minute=tier.requests_per_minute, per_day=tier.requests_per_day,
                    per_month=tier.requests_per_month)
    limiter = RateLimiter(notify.client(get_settings().redis_url))
    return limiter.peek(customer_id, limits).usage_block(tier.name)


def recorded(s: Session, customer_id: Any, since: datetime) -> list[dict[str, Any]]:
    """Finished jobs since `since`, per model, kind and final state."""
    rows = s.execute(
        select(UsageRecord.model, UsageRecord.kind, UsageRecord.final_state, func.count(),
               func.avg(UsageRecord.total_latency_ms))
        .where(UsageRecord.customer_id == customer_id, UsageRecord.created_at >= since.replace(tzinfo=None))
        .group_by(UsageRecord.model, UsageRecord.kind, UsageRecord.final_state)
        .order_by(UsageRecord.model, UsageRecord.kind, UsageRecord.final_state))
    return [{"model": m, "kind": k, "state": st, "jobs": n, "mean_latency_ms": round(lat, 1) if lat else None}
            for m, k, st, n, lat in rows]


def report(db_url: str, name: str, days: int) -> dict[str, Any]:
    with session_scope(db_url) as s:
        customer = service.get_customer(s, name)
        tier = s.get(Tier, customer.tier)
        if tier is None:
            raise service.AccountError(f"customer {name!r} is on tier {customer.tier!r}, which has no row")
        since = datetime.now(UTC) - timedelta(days=days)
        return {"customer": customer.name, "tier": tier.name, "now": live_counters(str(customer.id), tier),
                "since": since.isoformat(timespec="seconds"), "finished_jobs": recorded(s, customer.id, since)}


def render(body: dict[str, Any]) -> str:
    now = body["now"]

    def line(label: str, used: int, remaining: int | None) -> str:
        return f"  {label:<11}{used:>8} used, {'unlimited' if remaining is None else f'{remaining} left'}"

    out = [f"{body['customer']} (tier {body['tier']})", "requests counted by the web (quota):",
           line("this minute", now["requests_this_minute"], now["remaining_minute"]),
           line("today", now["requests_today"], now["remaining_day"]),
           line("this month", now["requests_this_month"], now["remaining_month"]),
           f"finished jobs since {body['since']}:"]
    if not body["finished_jobs"]:
        out.append("  none")
    for r in body["finished_jobs"]:
        lat = "" if r["mean_latency_ms"] is None else f", mean {r['mean_latency_ms']} ms"
        out.append(f"  {r['model']:<20}{r['kind']:<12}{r['state']:<10}{r['jobs']:>6}{lat}")
    return "\n".join(out)


def add_to(main: click.Group, db_url: Any) -> None:
    @main.command("usage")
    @click.argument("customer")
    @click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
                  help="how far back the finished jobs go")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def usage(customer: str, days: int, as_json: bool) -> None:
        """A customer's quota counters now and its finished jobs per model."""
        try:
            body = report(db_url(), customer, days)
        except service.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps(body, indent=2) if as_json else render(body))
