"""Rate limits, quotas and the in-flight cap against a real Redis (DB 15, unique key prefixes)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from web.ratelimit import Decision, InFlight, Limits, RateLimiter

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
T0 = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC).timestamp()  # a Wednesday noon
CLIENTS = 50


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def prefix(r: redis.Redis) -> Iterator[str]:
    p = f"test-rl-{uuid.uuid4().hex}"
    yield p
    for key in r.scan_iter(match=f"{p}:*"):
        r.delete(key)


@pytest.fixture
def rl(r: redis.Redis, prefix: str) -> RateLimiter:
    return RateLimiter(r, key_prefix=prefix)


def run_threads(n: int, target: Callable[[int, redis.Redis], bool]) -> list[bool]:
    """Run ``target`` in ``n`` threads, each with its own connection, released together."""
    barrier = threading.Barrier(n)
    results: list[bool] = [False] * n

    def worker(i: int) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        client.ping()  # connect before the barrier so the calls really overlap
        barrier.wait()
        results[i] = target(i, client)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    return results


def test_exactly_limit_admitted_by_concurrent_threads(r: redis.Redis, prefix: str) -> None:
    limits = Limits(per_minute=10)

    def hit(_: int, client: redis.Redis) -> bool:
        return RateLimiter(client, key_prefix=prefix).hit("acme", limits).allowed

    # Server TIME: the 11th unit would need 6 s of refill, far longer than this burst takes.
    assert sum(run_threads(CLIENTS, hit)) == 10
    limiter = RateLimiter(r, key_prefix=prefix)
    after = limiter.peek("acme", limits)
    assert after.minute.remaining == 0 and after.month.used == 10
    assert after.window_ids[1] == r.time()[0] // 86400  # windows follow the Redis clock
    assert r.script_exists(limiter._script.sha) == [True]  # loaded once, then run by EVALSHA


def _process_hit(prefix: str, start: mp.synchronize.Event, out: mp.Queue) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, key_prefix=prefix)
    client.ping()
    start.wait(10)
    out.put(limiter.hit("acme", Limits(per_minute=10), now=T0).allowed)


def test_exactly_limit_admitted_by_concurrent_processes(rl: RateLimiter, prefix: str) -> None:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_hit, args=(prefix, start, out)) for _ in range(CLIENTS)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    start.set()
    results = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert sum(results) == 10
    assert rl.peek("acme", Limits(per_minute=10), now=T0).minute.used == 10


def test_day_refusal_consumes_nothing(rl: RateLimiter) -> None:
    limits = Limits(per_minute=3, per_day=2, per_month=100)
    assert rl.hit("c", limits, now=T0).allowed
    assert rl.hit("c", limits, now=T0).allowed
    d = rl.hit("c", limits, now=T0)
    assert not d.allowed and d.refused == ("day",) and d.refused_by == "day"
    assert d.retry_after == pytest.approx(12 * 3600)  # noon to UTC midnight
    # The minute bucket still holds its last token and the month was not charged.
    assert (d.minute.remaining, d.day.used, d.month.used) == (1, 2, 2)
    nxt = rl.hit("c", limits, now=T0 + 12 * 3600)
    assert nxt.allowed and nxt.day.used == 1 and nxt.month.used == 3


def test_minute_refusal_consumes_nothing(rl: RateLimiter) -> None:
    limits = Limits(per_minute=1, per_day=5)
    assert rl.hit("c", limits, now=T0).allowed
    d = rl.hit("c", limits, now=T0 + 1)
    assert not d.allowed and d.refused == ("minute",)
    assert d.retry_after == pytest.approx(59) and d.day.used == 1


def test_all_refusing_limits_reported_and_longest_wait_binds(rl: RateLimiter) -> None:
    limits = Limits(per_minute=1, per_day=1, per_month=1)
    rl.hit("c", limits, now=T0)
    d = rl.hit("c", limits, now=T0)
    assert d.refused == ("minute", "day", "month") and d.refused_by == "month"
    assert d.retry_after == pytest.approx(ts(2025, 2, 1) - T0)


def test_minute_bucket_refills(rl: RateLimiter) -> None:
    limits = Limits(per_minute=2)
    assert [rl.hit("c", limits, now=T0).allowed for _ in range(3)] == [True, True, False]
    assert rl.hit("c", limits, now=T0).retry_after == pytest.approx(30)
    assert not rl.hit("c", limits, now=T0 + 29.9).allowed
    assert rl.hit("c", limits, now=T0 + 30).allowed  # one token back after 60/2 s
    assert not rl.hit("c", limits, now=T0 + 30).allowed
    full = rl.peek("c", limits, now=T0 + 90)
    assert full.minute.remaining == 2 and full.minute.reset_s == 0


def test_day_and_month_reset_at_utc_boundaries(rl: RateLimiter) -> None:
    limits = Limits(per_day=1, per_month=3)
    assert rl.hit("c", limits, now=ts(2025, 1, 30, 23, 59, 59)).allowed
    late = rl.hit("c", limits, now=ts(2025, 1, 30, 23, 59, 59) + 0.5)
    assert late.refused == ("day",) and late.headers()["Retry-After"] == "1"
    assert rl.hit("c", limits, now=ts(2025, 1, 31)).allowed
    jan_end = rl.hit("c", limits, now=ts(2025, 2, 1) - 1)
    assert jan_end.refused == ("day",) and jan_end.month.used == 2
    feb = rl.hit("c", limits, now=ts(2025, 2, 1))
    assert feb.allowed and feb.month.used == 1 and feb.window_ids[2] == 202502


@settings(max_examples=150, deadline=None)
@given(t=st.floats(min_value=0, max_value=ts(2200, 1, 1), allow_nan=False))
@example(t=ts(2024, 2, 29, 23, 59, 59))
@example(t=ts(2024, 12, 31, 23, 59, 59))
@example(t=ts(2100, 2, 28, 12))
def test_calendar_windows_match_python(r: redis.Redis, t: float) -> None:
    # peek on an absent key writes nothing, so no clean-up is needed.
    d = RateLimiter(r, key_prefix="test-rl-calendar").peek("c", Limits(1, 1, 1), now=t)
    t = round(t * 1e6) / 1e6  # the script works in whole microseconds
    moment = datetime.fromtimestamp(t, UTC)
    next_day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    y, m = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    assert d.window_ids[2] == moment.year * 100 + moment.month
    assert d.day.reset_s == pytest.approx(next_day.timestamp() - t, abs=1e-5)
    assert d.month.reset_s == pytest.approx(ts(y, m, 1) - t, abs=1e-5)


def test_unlimited_enterprise_month_is_still_counted(rl: RateLimiter) -> None:
    enterprise = Limits(per_minute=600, per_day=None, per_month=0)
    decisions = [rl.hit("big", enterprise, now=T0) for _ in range(150)]
    assert all(d.allowed for d in decisions)
    last = decisions[-1]
    assert last.month.remaining is None and last.month.used == 150 and last.day.remaining is None
    assert last.headers()["RateLimit-Policy"] == '"minute";q=600;w=60'
    block = last.usage_block("enterprise")
    assert block["remaining_month"] is None and block["requests_this_month"] == 150
    huge = rl.hit("big2", Limits(), cost=10**9, now=T0)
    assert huge.allowed and huge.headers() == {} and huge.month.used == 10**9


def test_refund_gives_the_unit_back(rl: RateLimiter) -> None:
    limits = Limits(per_minute=2, per_day=10, per_month=100)
    rl.hit("c", limits, now=T0)
    second = rl.hit("c", limits, now=T0)
    assert not rl.hit("c", limits, now=T0).allowed
    back = rl.refund("c", limits, now=T0, decision=second)
    assert (back.minute.remaining, back.day.used, back.month.used) == (1, 1, 1)
    assert rl.hit("c", limits, now=T0).allowed


def test_refund_never_overfills(rl: RateLimiter) -> None:
    limits = Limits(per_minute=2, per_day=10)
    d = rl.refund("fresh", limits, cost=5, now=T0)
    assert (d.minute.remaining, d.day.used, d.day.remaining, d.month.used) == (2, 0, 10, 0)


def test_refund_after_rollover_leaves_the_new_day_alone(rl: RateLimiter) -> None:
    limits = Limits(per_day=1)
    old = rl.hit("c", limits, now=ts(2025, 1, 15, 23, 59, 59))
    assert rl.hit("c", limits, now=ts(2025, 1, 16)).allowed
    d = rl.refund("c", limits, now=ts(2025, 1, 16, 0, 0, 1), decision=old)
    assert d.day.used == 1 and d.month.used == 1  # same month: that unit does come back
    assert not rl.hit("c", limits, now=ts(2025, 1, 16, 0, 0, 2)).allowed


def test_peek_consumes_nothing(rl: RateLimiter) -> None:
    limits = Limits(per_minute=3)
    for _ in range(10):
        assert rl.peek("c", limits, now=T0).allowed
    assert sum(rl.hit("c", limits, now=T0).allowed for _ in range(5)) == 3
    assert not rl.peek("c", limits, now=T0).allowed


def test_cost_above_limit_can_never_pass(rl: RateLimiter) -> None:
    d = rl.hit("c", Limits(per_minute=5), cost=6, now=T0)
    assert not d.allowed and d.retry_after == math.inf and "Retry-After" not in d.headers()
    assert rl.hit("c", Limits(per_minute=5), cost=5, now=T0).allowed


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_invalid_limits_and_costs(rl: RateLimiter, bad: object) -> None:
    with pytest.raises(ValueError):
        Limits(per_minute=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rl.hit("c", Limits(per_minute=1), cost=bad)  # type: ignore[arg-type]


SF_ITEM = re.compile(r'^"(minute|day|month)";q=\d+;w=\d+$')


def test_headers_format(rl: RateLimiter) -> None:
    limits = Limits(per_minute=10, per_day=1000, per_month=10000)
    d: Decision = rl.hit("c", limits, cost=7, now=T0)
    h = d.headers()
    assert h["RateLimit-Policy"] == (
        '"minute";q=10;w=60, "day";q=1000;w=86400, "month";q=10000;w=2592000'
    )
    assert all(SF_ITEM.match(item) for item in h["RateLimit-Policy"].split(", "))
    assert h["RateLimit"] == '"minute";r=3;t=42'  # 7 tokens at 6 s each until full
    assert "Retry-After" not in h
    refused = rl.hit("c", limits, cost=4, now=T0).headers()
    assert refused["Retry-After"] == "6" and refused["RateLimit"] == '"minute";r=3;t=42'


def test_rate_limit_header_reports_closest_to_exhaustion(rl: RateLimiter) -> None:
    d = rl.hit("c", Limits(per_minute=10, per_day=5), cost=3, now=T0)
    assert d.headers()["RateLimit"] == '"day";r=2;t=43200'


def test_usage_block(rl: RateLimiter) -> None:
    d = rl.hit("c", Limits(per_minute=10, per_day=100), cost=2, now=T0)
    assert d.usage_block("pro") == {
        "tier": "pro",
        "requests_this_minute": 2,
        "requests_today": 2,
        "requests_this_month": 2,
        "remaining_minute": 8,
        "remaining_day": 98,
        "remaining_month": None,
    }


# ---- in-flight cap ----------------------------------------------------------------------------


@pytest.fixture
def inflight(r: redis.Redis, prefix: str) -> InFlight:
    return InFlight(r, key_prefix=prefix)


def test_inflight_cap_exact_under_concurrency(r: redis.Redis, prefix: str) -> None:
    def acquire(i: int, client: redis.Redis) -> bool:
        return InFlight(client, key_prefix=prefix).acquire("c", f"job-{i}", cap=5, ttl_s=30)

    assert sum(run_threads(CLIENTS, acquire)) == 5
    assert InFlight(r, key_prefix=prefix).count("c") == 5


def test_inflight_stale_leases_expire(inflight: InFlight) -> None:
    assert inflight.acquire("c", "a", cap=2, ttl_s=10, now=1000)
    assert inflight.acquire("c", "b", cap=2, ttl_s=10, now=1005)
    assert not inflight.acquire("c", "x", cap=2, ttl_s=10, now=1009)
    assert inflight.count("c", now=1009.999) == 2
    assert inflight.count("c", now=1010) == 1  # "a" crashed without releasing: its lease ran out
    assert inflight.acquire("c", "x", cap=2, ttl_s=10, now=1010)
    assert not inflight.touch("c", "a", ttl_s=10, now=1011)


def test_inflight_release_touch_and_idempotent_acquire(inflight: InFlight) -> None:
    assert inflight.acquire("c", "a", cap=1, ttl_s=10, now=1000)
    assert inflight.acquire("c", "a", cap=1, ttl_s=10, now=1001)  # redelivery keeps its slot
    assert inflight.count("c", now=1001) == 1
    assert inflight.touch("c", "a", ttl_s=10, now=1008)
    assert inflight.count("c", now=1017) == 1
    assert inflight.release("c", "a") and not inflight.release("c", "a")
    assert inflight.acquire("c", "b", cap=1, ttl_s=10, now=1018)
    assert inflight.acquire("c", "z", cap=None, ttl_s=10, now=1018)  # no cap: counted only


def test_inflight_real_clock_expiry_removes_key(r: redis.Redis, inflight: InFlight) -> None:
    assert inflight.acquire("c", "a", cap=1, ttl_s=0.2)
    assert 0 < r.pttl(inflight.key("c")) <= 200
    time.sleep(0.3)
    assert inflight.count("c") == 0 and not r.exists(inflight.key("c"))
    with pytest.raises(ValueError):
        inflight.acquire("c", "a", cap=1, ttl_s=0)
