"""Admission control in front of the queue: charge first, then work. The schema has already checked the
body's shape (no I/O); then rate limit and quota, queue depth and the in-flight cap are counted; only then are
the images checked (from their headers) and the rest of the request prepared. A request refused after it was
counted gets its unit back, so a malformed request still costs the customer nothing, while a customer over
its limits cannot make us do any work beyond the count.
"""
from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g

from web import timing
from web.auth import Principal, current
from web.errors import AcceptedError, ApiError, best_effort
from web.metrics import QUEUE_DEPTH_READS, queue_depth_on
from web.ratelimit.decision import Decision, Limits
from web.ratelimit.inflight import InFlight
from web.ratelimit.limiter import RateLimiter, decode
from web.ratelimit.round_trip import one_round_trip, value
from web.services import catalog, submit
from workers.settings import Settings
from workers.store.models import Job
from workers.wire import backlog, notify, telemetry
from workers.wire.queues import infer_queue

T = TypeVar("T")


def _limits(p: Principal) -> Limits:
    return Limits(per_minute=p.per_minute, per_day=p.per_day, per_month=p.per_month)


def _redis(settings: Settings):
    return notify.client(settings.redis_url)


def _peek(p: Principal) -> Decision:
    return RateLimiter(_redis(current_app.config["SETTINGS"])).peek(p.customer_id, _limits(p))


def usage_now(principal: Principal | None = None) -> dict[str, Any]:
    """The usage block without consuming anything (GET /v1/usage)."""
    p = principal or current()
    return _peek(p).usage_block(p.tier)


def usage_headers(p: Principal) -> dict[str, str]:
    """RateLimit headers for responses that consumed nothing, so every /v1 answer shows the budget."""
    return best_effort(lambda: {k: v for k, v in _peek(p).headers().items() if k != "Retry-After"},
                       "usage headers") or {}


def usage_block() -> dict[str, Any] | None:
    """This request's usage block: the one its admission counted, else read now (an Idempotency-Key replay
    counted nothing); None if Redis cannot say, which never fails an answer that is otherwise good."""
    return g.get("usage") or best_effort(usage_now, "usage block")


def _refused(r, reason: str) -> None:
    # A counter: the refusal it counts is the answer, even when Redis cannot count it.
    best_effort(lambda: telemetry.refused(r, reason), "refusal counter")


def submit_job(data: dict[str, Any], kind: str = "interactive", *, idempotency_key: str | None = None,
               req_hash: str | None = None, waiter: bool = False) -> Job:
    """Admit, write and enqueue one job. `waiter`: this request will block on the job (the sync paths), so the
    worker wakes it with the settled row itself (workers/wire/notify.py), sparing it a read."""
    settings = current_app.config["SETTINGS"]
    catalog.require_model(settings, data["model"])  # a name lookup: an unknown model has no queue to count
    # The lease is keyed by the job id from the start, so the worker can release it when the job ends.
    job_id = uuid.uuid4()
    ttl = min(data.get("deadline_ms") or settings.default_deadline_ms, settings.max_deadline_ms) / 1000 + 30.0

    fail_fast = settings.admission_fail_fast and kind == "interactive"
    deadline_ms = min(data.get("deadline_ms") or settings.default_deadline_ms, settings.max_deadline_ms)
    r = _redis(settings)

    def create(inflight_key: str) -> Job:
        prepared = submit.prepare(settings, data, g.request_id, kind)  # images from headers, robot config
        prepared.payload["inflight_key"] = inflight_key
        prepared.payload["waiter"] = waiter
        prepared.payload["tier"] = current().tier  # the batcher's tie-break among equal deadlines
        # Fail fast counts the job in its model's backlog from before its message exists; the worker removes it
        # when its inference ends (workers/stages/inference.py), and a job that is never sent is removed here.
        counted = (lambda pipe: backlog.add(pipe, data["model"], str(job_id), prepared.deadline_at.timestamp())
                   ) if fail_fast else None
        try:
            return submit.create_job(current(), prepared, g.request_id, job_id=job_id,
                                     idempotency_key=idempotency_key, req_hash=req_hash, also=counted)
        except AcceptedError:
            raise  # the job exists and is sent (or will be, by the reaper): it stays counted until it runs
        except BaseException:
            if fail_fast:
                best_effort(lambda: backlog.done(r, data["model"], str(job_id)), "backlog removal")
            raise

    job = admit_counted(infer_queue(data["model"], kind), str(job_id), ttl, create,
                        check=_deadline_check(settings, data["model"], deadline_ms) if fail_fast else None,
                        backlog_of=data["model"] if fail_fast else None)
    best_effort(lambda: telemetry.submitted(r, job.model, kind), "submitted counter")
    return job


def refuse_if_full(r, queue: str, depth: int, max_depth: int) -> None:
    """503 queue_full once `queue` holds max_depth messages (the depth was read with the charge)."""
    if depth >= max_depth:
        _refused(r, "queue_full")
        raise ApiError(503, "queue_full", f"the {queue} queue is full; retry shortly", headers={"Retry-After": "2"})


def _deadline_check(settings: Settings, model: str, deadline_ms: float) -> Callable[[Any, int], None]:
    """Fail fast: refuse now (503 deadline_unattainable) a request the model's backlog and its workers' learned
    batch-latency curves say would expire, so a robot can fall back or slow down at once (workers/wire/backlog.py)."""

    def check(r, waiting: int) -> None:
        verdict = backlog.verdict(waiting, catalog.workers_for(settings, model), deadline_ms)
        if verdict is None or verdict.attainable:
            return
        _refused(r, "deadline")
        raise ApiError(503, "deadline_unattainable",
                       f"model {model} cannot serve this request within its {deadline_ms:.0f} ms deadline now "
                       f"(expected about {verdict.expected_ms:.0f} ms); retry after retry_after_ms, lower the "
                       "request rate, or allow a longer deadline_ms",
                       headers={"Retry-After": str(max(1, math.ceil(verdict.retry_after_ms / 1e3)))},
                       **verdict.to_dict())

    return check


def refuse_if_over_limit(*, in_flight: bool = False) -> None:
    """For a door about to do costly work before admission (read a large body, decode a frame): look, consuming
    nothing, at the caller's rate limit and quota (and with `in_flight`, its in-flight count), and answer 429 now
    if one is used up. Not the charge: admission still makes it atomically, and refuses there a request that
    raced past this look, still before any image work."""
    p = current()
    r = _redis(current_app.config["SETTINGS"])
    counted = in_flight and p.max_in_flight is not None

    def reads(pipe) -> None:  # both looks in one round trip (web/ratelimit/round_trip.py)
        RateLimiter(r).queue(pipe, "peek", p.customer_id, _limits(p))
        if counted:
            InFlight(r).queue_count(pipe, p.customer_id)

    replies = [value(x) for x in one_round_trip(r, reads)]
    decision = decode(replies[0], _limits(p))
    if not decision.allowed:
        _refuse_rate(r, decision)
    if counted and int(replies[1][1]) >= p.max_in_flight:
        _refused(r, "in_flight")
        raise _too_many_in_flight(p)


def _refuse_rate(r, decision: Decision) -> None:
    g.extra_headers = decision.headers()
    # minute -> rate; day and month -> quota (the fixed reasons of vla_requests_refused_total)
    _refused(r, "rate" if decision.refused_by in (None, "minute") else "quota")
    raise rate_limited(decision)


def _too_many_in_flight(p: Principal) -> ApiError:
    return ApiError(429, "too_many_in_flight", f"at most {p.max_in_flight} jobs and replays may be in flight for "
                    "this customer; wait for one to finish", headers={"Retry-After": "1"})


def rate_limited(decision: Decision) -> ApiError:
    which = decision.refused_by or "minute"
    code = "quota_exceeded" if which == "month" else "rate_limited"
    return ApiError(429, code, f"the {which} limit for this customer is used up", headers=decision.headers(),
                    usage=decision.usage_block(current().tier))


def accepted(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """202 for a new job or replay: its JSON with the caller's usage block, and a Location header."""
    return {**body, "usage": usage_block()}, 202, {"Location": body["links"]["self"]}


def ended(row: Job | Any, state: str) -> None:
    """The web ended a job or replay (cancel, expiry): wake its waiters and free its in-flight slot.

    Called after the end was committed, so a Redis error here must not answer as if it had not happened:
    other waiters re-read the row within 5 s (waiting.py) and the slot's lease runs out by itself."""
    r = _redis(current_app.config["SETTINGS"])
    # The same path the workers take (workers/wire/notify.py), in one round trip.
    best_effort(lambda: notify.ended(r, str(row.id), state, InFlight(r).key(str(row.customer_id))),
                f"wake-up of {row.id} ({state})")


def admit_counted(queue: str, lease_id: str, ttl_s: float, create: Callable[[str], T],
                  check: Callable[[Any, int], None] | None = None, backlog_of: str | None = None) -> T:
    """Admit one request that is not a job (a replay counts as one request): rate limit and quota, queue
    depth (and `check(redis, backlog)`, which may refuse, given the count of `backlog_of`'s backlog), then an
    in-flight slot leased under `lease_id`. `create(inflight_key)` writes and enqueues it;
    if anything after counting fails, the unit is refunded and the slot released, as for jobs.
    The charge and the reads the checks need go to Redis in one round trip (web/ratelimit/round_trip.py), in
    the order they were asked one by one: the charge first, then the queue, then the backlog."""
    p = current()
    settings = current_app.config["SETTINGS"]
    r = _redis(settings)
    limiter = RateLimiter(r)

    def reads(pipe) -> None:
        limiter.queue(pipe, "hit", p.customer_id, _limits(p))
        queue_depth_on(pipe, queue)
        if backlog_of is not None:
            backlog.count_on(pipe, backlog_of)

    with timing.phase("admit"):
        replies = one_round_trip(r, reads)
    decision = decode(value(replies[0]), _limits(p))
    g.extra_headers = decision.headers()
    g.usage = decision.usage_block(p.tier)
    if not decision.allowed:
        _refuse_rate(r, decision)
    try:
        with timing.phase("admit"):
            # A read that failed after the charge raises here, inside the refund's reach.
            depth = int(sum(value(x) for x in replies[1:1 + QUEUE_DEPTH_READS]))
            waiting = int(value(replies[-1])) if backlog_of is not None else 0
            refuse_if_full(r, queue, depth, settings.max_queue_depth)
            if check is not None:
                check(r, waiting)
            inflight = InFlight(r)
            if not inflight.acquire(p.customer_id, lease_id, p.max_in_flight, ttl_s):
                _refused(r, "in_flight")
                raise _too_many_in_flight(p)
        try:
            with timing.phase("enqueue"):
                return create(inflight.key(p.customer_id))
        except AcceptedError:
            raise  # the job exists: it is charged when it ends, and its end frees the slot
        except BaseException:
            best_effort(lambda: inflight.release(p.customer_id, lease_id), "in-flight release")
            raise
    except AcceptedError:
        raise
    except BaseException:
        # A refund that fails (Redis is why we are here, often) loses the customer one unit at worst; it must
        # not turn this request's answer (a 503, a 422) into a 500.
        best_effort(lambda: limiter.refund(p.customer_id, _limits(p), decision=decision), "refund")
        raise
