"""A model's interactive backlog, and the fail-fast estimate: can a new request's deadline still be met?

The Redis queue's length alone says little: a GPU worker's task threads take messages at once and hold them
in the batcher. So the web keeps, per model, a sorted set of the interactive jobs it has accepted, scored by
their deadline (epoch s); the GPU worker removes a job when its inference ends, and an entry whose deadline
has passed stops counting by itself (a crashed worker cannot leak backlog). Its size, the workers' learned
batch-latency curves (heartbeats, workers/wire/curve.py) and their number give the expected time to serve
one more request; admission refuses at once (503 deadline_unattainable) what would expire anyway.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from workers.wire.curve import LatencyCurve, expected_service_s


def backlog_key(model: str) -> str:
    return f"vla:backlog:{model}"


def count(r: redis.Redis, model: str, now: float | None = None) -> int:
    """Accepted interactive jobs of `model` not yet through inference, deadline not passed (one round trip)."""
    pipe = r.pipeline()
    count_on(pipe, model, now)
    return int(pipe.execute()[1])


def count_on(pipe: Any, model: str, now: float | None = None) -> None:
    """`count` added to a pipeline: two replies, the second the count."""
    now = time.time() if now is None else now
    pipe.zremrangebyscore(backlog_key(model), "-inf", now)
    pipe.zcard(backlog_key(model))


def add(pipe: Any, model: str, job_id: str, deadline_epoch: float) -> None:
    """Queue the entry on `pipe`: the web sends it with the job's images, before the job's message is
    published, so the worker's removal can never come first and leave the entry counted until its deadline."""
    pipe.zadd(backlog_key(model), {job_id: deadline_epoch})
    pipe.expire(backlog_key(model), 3600)  # a model nobody calls any more leaves nothing behind


def done(r: redis.Redis, model: str, job_id: str) -> None:
    r.zrem(backlog_key(model), job_id)


@dataclass(frozen=True)
class Verdict:
    expected_ms: float
    deadline_ms: float

    @property
    def attainable(self) -> bool:
        return self.expected_ms <= self.deadline_ms

    @property
    def retry_after_ms(self) -> float:
        """Pacing advice: about when the backlog will have shrunk enough for this deadline."""
        return max(0.0, self.expected_ms - self.deadline_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"expected_ms": round(self.expected_ms, 1), "deadline_ms": self.deadline_ms,
                "retry_after_ms": math.ceil(self.retry_after_ms)}


def verdict(ahead: int, heartbeats: list[dict[str, Any]], deadline_ms: float) -> Verdict | None:
    """The estimate for one more request, or None when no ready worker reports a curve (then nothing is
    refused on a guess) or when the deadline is shorter than one pass even on an idle pool: waiting would not
    help, so that is not an overload to retry after (503) but a deadline the model cannot meet, which the
    worker's scheduler ends at once, uncomputed, with the reason (504 deadline_exceeded)."""
    curves = [b["stats"]["curve"] for b in heartbeats
              if b.get("state") == "ready" and b.get("consuming", True) is not False
              and isinstance(b.get("stats"), dict) and isinstance(b["stats"].get("curve"), dict)]
    curves = [c for c in curves if c.get("a_ms") is not None]
    if not curves:
        return None
    # The slowest worker's curve: a pool that mixes GPUs is judged by its slowest member, never optimistically.
    curve = max((LatencyCurve.from_dict(c) for c in curves), key=lambda c: c.predict(c.max_batch))
    if deadline_ms < curve.predict(1) * 1e3:
        return None
    return Verdict(expected_service_s(ahead, len(curves), curve) * 1e3, deadline_ms)
