"""Fixtures of the edge tests (tests/web/test_edge.py, tests/web/test_msgpack_bodies.py): a customer over its
limit, and a count of the image conversions that run."""
from __future__ import annotations

import pytest


@pytest.fixture()
def over_limit_free(app, settings, make_customer):
    """A Free customer whose minute is used up (through the limiter itself)."""
    from web.auth import _look_up
    from web.ratelimit.decision import Limits
    from web.ratelimit.limiter import RateLimiter
    from workers.wire import notify

    _, key, headers = make_customer("free")
    with app.app_context():
        principal, _ = _look_up(key, settings.api_key_pepper)
    limits = Limits(per_minute=principal.per_minute, per_day=principal.per_day, per_month=principal.per_month)
    limiter = RateLimiter(notify.client(settings.redis_url))
    while limiter.hit(principal.customer_id, limits).allowed:
        pass
    return headers


@pytest.fixture()
def conversions(monkeypatch):
    """Count the image conversions (the real one still runs)."""
    from web.compat import arrays

    calls: list[tuple[int, ...]] = []
    real = arrays._to_raw

    def counted(arr, field):
        calls.append(arr.shape)
        return real(arr, field)

    monkeypatch.setattr(arrays, "_to_raw", counted)
    return calls
