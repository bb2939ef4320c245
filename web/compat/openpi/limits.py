"""What one openpi process, one connection and one frame may hold.

Process limits come from the environment (`.env.example` lists each); the per-customer connection caps by tier
live with the other settings (OPENPI_TIER_CONNECTIONS in workers/settings.py). A frame's budget is sized from
the model's description (its cameras and state), so a frame that could not be an observation of that model is
refused by websockets from its header (close 1009) and by msgpack from each length prefix, before any of it is
built into Python objects.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from web.errors import ApiError

# The most images a published openpi layout sends (ALOHA: cam_high, cam_low and two wrist cameras): a client
# may send images a model has no slot for (they are ignored), so the budget never counts fewer.
LAYOUT_IMAGES = 4
OVERHEAD_BYTES = 64 * 1024  # keys, dtype strings, shapes and the prompt, with room to spare
MAX_CONTAINERS = 1024  # maps and arrays in one observation; a real one has a few dozen


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256  # OPENPI_MAX_CONNECTIONS: open connections of this process
    threads: int = 32  # OPENPI_THREADS: observations served at once (admission and the wait for the job)
    customer_threads: int = 8  # OPENPI_CUSTOMER_THREADS: of those, at most this many for one customer
    decode_threads: int = 2  # OPENPI_DECODE_THREADS: frames decoded at once, apart from the admission pool
    max_message_bytes: int = 32 * 1024 * 1024  # OPENPI_MAX_MESSAGE_BYTES: a ceiling over every model's budget
    # OPENPI_MAX_IMAGE_PIXELS: one image's pixels (H x W). openpi's examples send 224 x 224; VGA leaves room
    # while keeping a full frame's copy and unmasking on the loop (websockets does both there) to a few ms.
    max_image_pixels: int = 640 * 480
    idle_timeout_s: float = 300.0  # OPENPI_IDLE_TIMEOUT_S: a connection that sends nothing this long is closed
    max_queue: int = 2  # OPENPI_MAX_QUEUE: frames received ahead of the one being served, per connection

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        d = cls()
        return cls(max_connections=int(env.get("OPENPI_MAX_CONNECTIONS", d.max_connections)),
                   threads=int(env.get("OPENPI_THREADS", d.threads)),
                   customer_threads=int(env.get("OPENPI_CUSTOMER_THREADS", d.customer_threads)),
                   decode_threads=int(env.get("OPENPI_DECODE_THREADS", d.decode_threads)),
                   max_message_bytes=int(env.get("OPENPI_MAX_MESSAGE_BYTES", d.max_message_bytes)),
                   max_image_pixels=int(env.get("OPENPI_MAX_IMAGE_PIXELS", d.max_image_pixels)),
                   idle_timeout_s=float(env.get("OPENPI_IDLE_TIMEOUT_S", d.idle_timeout_s)),
                   max_queue=max(1, int(env.get("OPENPI_MAX_QUEUE", d.max_queue))))


@dataclass(frozen=True)
class FrameBudget:
    """msgpack's per-object limits and the frame's size for one model."""

    frame_bytes: int
    bin_bytes: int  # one image: pixels x 3 bytes (uint8 RGB, what openpi's clients send)
    array_len: int
    map_len: int = 64
    str_len: int = OVERHEAD_BYTES
    containers: int = MAX_CONTAINERS
    values: int | None = None  # items of all maps and arrays together; bounded here by containers x lengths


def budget_for(spec: dict[str, Any] | None, limits: Limits) -> FrameBudget:
    spec = spec or {}
    images = max(len(spec.get("cameras") or []), LAYOUT_IMAGES)
    state_dim = int(spec.get("state_dim") or 0)
    bin_bytes = limits.max_image_pixels * 3
    frame = min(images * bin_bytes + state_dim * 8 + OVERHEAD_BYTES, limits.max_message_bytes)
    return FrameBudget(frame_bytes=frame, bin_bytes=min(bin_bytes, frame), array_len=max(64, 2 * state_dim))


class Slots:
    """Connection slots: this process's and each customer's. The check and the count happen with no await
    between them (one event loop), so concurrent handshakes cannot overshoot either cap."""

    def __init__(self, max_total: int):
        self.max_total, self.total = max_total, 0
        self.by_customer: Counter[str] = Counter()

    def full(self) -> bool:
        return self.total >= self.max_total

    def reserve(self, customer_id: str, cap: int) -> Slot:
        if self.by_customer[customer_id] >= cap:
            # The customer's own cap first: it is theirs to free, and says so, where 503 would say "retry".
            raise ApiError(429, "too_many_connections", f"this customer may hold at most {cap} openpi "
                           "connection(s) on this server; close one first", headers={"Retry-After": "5"})
        if self.full():
            raise ApiError(503, "too_many_connections", "this openpi process is full; retry shortly",
                           headers={"Retry-After": "2"})
        self.total += 1
        self.by_customer[customer_id] += 1
        return Slot(self, customer_id)


class Slot:
    """One reserved connection; released exactly once, whichever of close or refusal comes first."""

    def __init__(self, slots: Slots, customer_id: str):
        self.slots, self.customer_id, self.held = slots, customer_id, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.total -= 1
            self.slots.by_customer[self.customer_id] -= 1
            if self.slots.by_customer[self.customer_id] <= 0:
                del self.slots.by_customer[self.customer_id]
