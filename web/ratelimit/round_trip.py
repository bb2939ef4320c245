"""Several limiter calls and reads in one Redis round trip (issue 26).

Admission used to ask Redis four times in a row before a job was written (the rate-limit script, the queue's
depth, the model's backlog, the in-flight script) and the openpi door's look before decoding twice more; on
the one-client path each answer is a round trip plus redis-py's Python around it. The commands that do not
depend on each other's answers now go out together: scripts by EVALSHA in a non-transactional pipeline (Redis
runs them in order, each atomically, exactly as one by one), the answers decoded by the caller.
If Redis has lost the scripts (a restart, SCRIPT FLUSH), nothing of ours that writes has run (EVALSHA refused),
so the scripts are loaded and the commands sent again: the reads among them are simply read twice.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import NoScriptError

from .scripts import INFLIGHT_LUA, LIMITS_LUA


def one_round_trip(r: redis.Redis, queue: Callable[[Any], None]) -> list[Any]:
    """Send what `queue(pipe)` adds to a pipeline, in one round trip; its replies in order. A command Redis
    refused is an exception in its place (`value` raises it), so the caller decides what one refusal means for
    the others: a charge that went through is refunded when a read after it failed, as before."""
    for attempt in (0, 1):
        pipe = r.pipeline(transaction=False)
        queue(pipe)
        replies = pipe.execute(raise_on_error=False)
        if attempt or not any(isinstance(x, NoScriptError) for x in replies):
            return replies
        for lua in (LIMITS_LUA, INFLIGHT_LUA):
            r.script_load(lua)
    raise AssertionError("unreachable")


def value(reply: Any) -> Any:
    """A reply of one_round_trip, or the error Redis answered in its place, raised."""
    if isinstance(reply, Exception):
        raise reply
    return reply
