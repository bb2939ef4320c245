"""A fixed-rate control loop fed by a fetcher thread: one action per tick from a ChunkPlayer.

The loop is what a robot runs; `fetch(deadline_ms)` is how it gets actions (a `VLAClient.act` call on a
fresh observation in practice). Kept apart from the example so that its pacing is tested with a real clock.

Modes: `append` (the default: a chunk is queued behind the actions left, none is dropped), `switch` (a chunk
replaces the queue once it arrives, less the actions played meanwhile) and `rtc` (switching, and each request
carries the un-executed remainder and the expected delay in ticks, `fetch(deadline_ms, rtc)` with
rtc = {"prev_actions", "inference_delay"}, so that a flow policy's new chunk continues the executing one:
real-time chunking). In the switching modes the fetcher asks one latency earlier, so the chunks overlap.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from vlaapi_client.chunks import ChunkPlayer
from vlaapi_client.errors import VLAError

Fetch = Callable[..., np.ndarray]  # fetch(deadline_ms) or, in the switching modes, fetch(deadline_ms, rtc)
MODES = ("append", "switch", "rtc")
RETRY_FLOOR_S, RETRY_CAP_S = 0.05, 1.0


def retry_wait_s(retry_after: float | None, refusals: int) -> float:
    """The fetcher's sleep after its `refusals`-th refusal in a row: the service's retry_after (a fail-fast 503's
    retry_after_ms is to the millisecond), never under a floor that doubles with each refusal in a row (50 ms,
    100 ms, 200 ms, ...), at most 1 s. One refusal near capacity costs a few ticks; a pool that stays overloaded
    is not asked again every few milliseconds by every robot of the fleet."""
    floor = RETRY_FLOOR_S * 2 ** max(0, refusals - 1)
    return min(max(retry_after or 0.0, floor), RETRY_CAP_S)


class ControlLoop:
    """Ticks at `hz`; a fetcher asks for the next chunk only when the queue covers less than the latency.

    The expected latency is the p90 of the last 50 requests with a quarter of margin, so one slow answer
    does not make the fetcher run ahead for the rest of the run.
    """

    def __init__(self, fetch: Fetch, hz: float, *, horizon: int | None = None, min_deadline_ms: int = 50,
                 mode: str = "append", rtc_options: dict | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.fetch, self.period, self.min_deadline_ms, self.mode = fetch, 1.0 / hz, min_deadline_ms, mode
        self.player = ChunkPlayer(horizon=horizon)
        self.executed: list[np.ndarray | None] = []  # the action of every tick (None: starved)
        self.delays: list[int] = []  # the inference_delay each rtc request carried
        self.rtc_options = dict(rtc_options or {})  # e.g. {"jacobian": "identity", "execution_horizon": 8}
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.first_error: dict[str, str] = {}
        self._recent: deque[float] = deque(maxlen=50)
        self._refusals = 0  # in a row, for the retry's backoff
        self.stop = threading.Event()
        self.wake = threading.Event()

    def expected_latency_s(self) -> float:
        if not self._recent:
            return self.period / 2
        return float(np.percentile(self._recent, 90)) / 1000 * 1.25

    def warm_up(self, deadline_ms: int) -> float:
        """The request before the first tick, as robot code makes: its action is the first move, and its
        latency (a cold path, so longer than typical) is the first estimate; an under-estimate would starve
        the first refill. Returns its latency in ms."""
        self.fetch_once(deadline_ms, on_error=False)
        return self.latencies.pop()  # in the estimate, not in the loop's figures

    def latency_ticks(self) -> int:
        """Ticks a request is expected to span: the inference delay real-time chunking asks for."""
        return max(1, math.ceil(self.expected_latency_s() / self.period))

    def wants_more(self) -> bool:
        if self.mode == "append":
            return self.player.wants_more(self.expected_latency_s(), self.period)
        return self.player.remaining < 2 * self.latency_ticks() + 1  # the chunks overlap by a latency

    def fetch_once(self, deadline_ms: int | None = None, *, on_error: bool = True) -> None:
        """One request; its deadline is when the queued actions run out, since a later chunk is useless."""
        if deadline_ms is None:
            deadline_ms = max(self.min_deadline_ms, int((self.player.remaining + 1) * self.period * 1000))
            if self.mode != "append":  # a late chunk still serves, less the ticks it missed: never starve on deadlines
                deadline_ms = max(deadline_ms, int(3000 * self.expected_latency_s()))
        prev, since = self.player.remainder()
        t0 = time.perf_counter()
        try:
            if self.mode == "append":
                actions = self.fetch(deadline_ms)
            else:
                rtc = None
                if self.mode == "rtc" and prev is not None:
                    delay = min(self.latency_ticks(), len(prev))
                    rtc = {**self.rtc_options, "prev_actions": prev.tolist(), "inference_delay": delay}
                    self.delays.append(delay)
                actions = self.fetch(deadline_ms, rtc)
        except VLAError as err:
            if not on_error:
                raise
            self.errors[type(err).__name__] += 1
            self.first_error.setdefault(type(err).__name__, str(err))
            self._refusals += 1
            time.sleep(retry_wait_s(err.retry_after, self._refusals))
            return
        self._refusals = 0
        ms = (time.perf_counter() - t0) * 1000
        self.latencies.append(ms)
        self._recent.append(ms)
        if self.mode == "append":
            self.player.push(actions)
        else:
            self.player.switch(actions, since)

    def fetch_forever(self) -> None:
        while not self.stop.is_set():
            if self.wants_more():
                self.fetch_once()
                continue
            self.wake.wait(self.period / 4)  # a tick sets it: the fetcher reacts at once to an emptied queue
            self.wake.clear()

    def control(self, seconds: float) -> dict[str, float]:
        """Tick on an absolute schedule (lateness never accumulates); a tick with no action is starved."""
        ticks = starved = 0
        late: list[float] = []
        start = time.monotonic()
        for i in range(round(seconds / self.period)):
            next_tick = start + i * self.period
            time.sleep(max(0.0, next_tick - time.monotonic()))
            late.append((time.monotonic() - next_tick) * 1000)
            action = self.player.next()  # a real robot would send the action to its controller here
            self.executed.append(action)
            starved += action is None
            ticks += 1
            self.wake.set()
        # Sleep out the last tick's period, so that rate = ticks / elapsed.
        time.sleep(max(0.0, start + ticks * self.period - time.monotonic()))
        return {"ticks": ticks, "starved": starved, "elapsed_s": time.monotonic() - start,
                "tick_late_p99_ms": float(np.percentile(late, 99)) if late else 0.0}

    def run(self, seconds: float) -> dict[str, float]:
        """Fetcher and ticks together; the counts a robot cares about: on-time ticks and requests per tick."""
        fetcher = threading.Thread(target=self.fetch_forever, daemon=True, name="chunk-fetcher")
        fetcher.start()
        try:
            stats = self.control(seconds)
        finally:
            self.stop.set()
            fetcher.join(timeout=5)
        requests = len(self.latencies) + sum(self.errors.values())
        ticks = stats["ticks"] or 1
        return stats | {"requests": requests, "on_time": round((stats["ticks"] - stats["starved"]) / ticks, 4),
                        "requests_per_tick": round(requests / ticks, 4)}


def jump_stats(played: list[np.ndarray], switches: list[tuple[int, float]]) -> dict[str, float | int]:
    """How smooth the executed actions were: the largest (and median) step between consecutive actions where a
    new chunk took over, the same inside chunks, and the largest gap between a new chunk's first action and
    the old chunk's plan for that tick (max-abs over the action's dimensions, in robot units)."""
    acts = np.asarray(played, dtype=np.float64)
    steps = np.abs(np.diff(acts, axis=0)).max(axis=1) if len(acts) > 1 else np.zeros(0)
    at = sorted({p - 1 for p, _ in switches if 1 <= p < len(acts)})  # steps[i] is acts[i] -> acts[i + 1]
    boundary, interior = steps[at], np.delete(steps, at)
    gaps = [g for p, g in switches if not math.isnan(g) and p < len(acts)]

    def stat(xs, f):
        return round(float(f(xs)), 4) if len(xs) else None

    return {"boundaries": len(at), "boundary_jump_max": stat(boundary, np.max),
            "boundary_jump_p50": stat(boundary, np.median), "interior_step_max": stat(interior, np.max),
            "interior_step_p50": stat(interior, np.median), "plan_gap_max": stat(gaps, np.max)}
