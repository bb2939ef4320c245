"""Per-customer rate limits, quotas and concurrency caps, enforced atomically in Redis."""

from .decision import MAX_PER_MINUTE, Decision, Limits, Window
from .inflight import InFlight
from .limiter import RateLimiter

__all__ = ["MAX_PER_MINUTE", "Decision", "InFlight", "Limits", "RateLimiter", "Window"]
