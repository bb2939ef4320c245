"""Bearer API keys: format and checksum checked before any look-up, HMAC digest compared in constant time."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app, g, request
from sqlalchemy import select, update

from web import auth_cache, db
from web.accounts.keys import KeyFormatError, lookup_prefix, parse_bearer, verify
from web.errors import ApiError
from workers import logs
from workers.store.models import ApiKey, Customer, Tier

_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is a hint; one write a minute per key is plenty


@dataclass(frozen=True)
class Principal:
    customer_id: str
    customer_name: str
    key_id: str
    tier: str
    per_minute: int | None
    per_day: int | None
    per_month: int | None
    max_in_flight: int | None
    max_replay_steps: int | None = None
    max_concurrent_replays: int | None = None
    max_upload_mb: int | None = None


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="vlaapi"'})


def _as_bearer(value: str | None) -> str | None:
    """openpi's clients send `Api-Key <key>`; it names the same key as `Bearer <key>`."""
    scheme, _, rest = (value or "").strip().partition(" ")
    return f"Bearer {rest}" if scheme.lower() == "api-key" else value


def authenticate() -> Principal:
    try:
        key = parse_bearer(_as_bearer(request.headers.get("Authorization")))
    except KeyFormatError as exc:
        raise _unauthorized(str(exc)) from None
    settings = current_app.config["SETTINGS"]
    cache = auth_cache.for_ttl(settings.auth_cache_s)
    # Scoped by database and pepper too: a key means something only against the accounts it was checked in.
    scoped = f"{settings.database_url}\0{settings.api_key_pepper}\0{key}"
    principal = cache.get(scoped)
    if principal is None:
        principal, expires_at = _look_up(key, settings.api_key_pepper)
        cache.put(scoped, principal, expires_at)
    g.principal = principal
    logs.bind(customer_id=principal.customer_id)
    return principal


def _look_up(key: str, pepper: str) -> tuple[Principal, datetime | None]:
    """The key's principal from the database (401/403 when it may not call), and when the key expires."""
    s = db.session()
    row = s.execute(
        select(ApiKey, Customer, Tier).join(Customer, ApiKey.customer_id == Customer.id)
        .join(Tier, Customer.tier == Tier.name).where(ApiKey.prefix == lookup_prefix(key))
    ).first()
    if row is None or not verify(key, row.ApiKey.digest, pepper):
        raise _unauthorized("unknown API key")
    api_key, customer, tier = row
    now = datetime.now(UTC)
    if api_key.revoked_at is not None or (api_key.expires_at is not None and api_key.expires_at <= now):
        raise _unauthorized("this API key has been revoked or has expired")
    if customer.disabled:
        raise ApiError(403, "customer_disabled", "this customer account is disabled")
    if api_key.last_used_at is None or now - api_key.last_used_at > _TOUCH_EVERY:
        s.execute(update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now))
        s.commit()
    principal = Principal(str(customer.id), customer.name, str(api_key.id), tier.name, tier.requests_per_minute,
                          tier.requests_per_day, tier.requests_per_month, tier.max_in_flight,
                          tier.max_replay_steps, tier.max_concurrent_replays, tier.max_upload_mb)
    return principal, api_key.expires_at


def current() -> Principal:
    return g.principal


def load_owned(model, row_id: str, what: str, *, lock: bool = False):
    """The caller's row of `model` (Job, Replay), or 404: another customer's row is indistinguishable from a
    missing one, so ids leak nothing across tenants."""
    try:
        rid = uuid.UUID(row_id)
    except ValueError:
        raise ApiError(404, "not_found", f"no {what} {row_id!r}") from None
    stmt = select(model).where(model.id == rid, model.customer_id == uuid.UUID(current().customer_id))
    row = db.session().execute(stmt.with_for_update() if lock else stmt).scalar_one_or_none()
    if row is None:
        raise ApiError(404, "not_found", f"no {what} {row_id!r}")
    return row
