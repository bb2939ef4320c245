"""Customers and API keys: what the CLI and the tests call. Keys are shown once and stored as digests."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from web.accounts.keys import check_format, generate_key, lookup_prefix
from workers.store.models import ApiKey, Customer, Tier


class AccountError(ValueError):
    pass


def create_customer(s: Session, name: str, tier: str = "free") -> Customer:
    _require_tier(s, tier)
    if s.execute(select(Customer).where(Customer.name == name)).scalar_one_or_none():
        raise AccountError(f"customer {name!r} already exists")
    customer = Customer(name=name, tier=tier)
    s.add(customer)
    s.flush()
    return customer


def get_customer(s: Session, name: str) -> Customer:
    customer = s.execute(select(Customer).where(Customer.name == name)).scalar_one_or_none()
    if customer is None:
        raise AccountError(f"no customer {name!r}")
    return customer


def set_tier(s: Session, name: str, tier: str) -> Customer:
    _require_tier(s, tier)
    customer = get_customer(s, name)
    customer.tier = tier
    return customer


def _require_tier(s: Session, tier: str) -> None:
    tiers = list(s.execute(select(Tier.name)).scalars())
    if tier not in tiers:
        raise AccountError(f"unknown tier {tier!r}; tiers: {', '.join(tiers)}")


def create_key(s: Session, customer: Customer, pepper: str, *, name: str = "default",
               expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which is never stored and cannot be shown again."""
    generated = generate_key("live", pepper=pepper)
    key = ApiKey(customer_id=customer.id, prefix=generated.prefix, digest=generated.digest, name=name,
                 expires_at=expires_at)
    s.add(key)
    s.flush()
    return key, generated.plaintext


def find_key(s: Session, prefix_or_key: str) -> ApiKey:
    prefix = lookup_prefix(prefix_or_key) if check_format(prefix_or_key) else prefix_or_key
    key = s.execute(select(ApiKey).where(ApiKey.prefix == prefix)).scalar_one_or_none()
    if key is None:
        raise AccountError(f"no API key with prefix {prefix!r}")
    return key


def revoke_key(s: Session, prefix: str) -> ApiKey:
    key = find_key(s, prefix)
    key.revoked_at = key.revoked_at or datetime.now(UTC)
    return key


def rotate_key(s: Session, prefix: str, pepper: str, *, grace: timedelta) -> tuple[ApiKey, str]:
    """A new key now; the old one keeps working until `grace` has passed, so clients can switch over."""
    old = find_key(s, prefix)
    if old.revoked_at is not None:
        raise AccountError("cannot rotate a revoked key")
    customer = s.get(Customer, old.customer_id)
    until = datetime.now(UTC) + grace
    old.expires_at = min(old.expires_at, until) if old.expires_at else until
    return create_key(s, customer, pepper, name=old.name)
