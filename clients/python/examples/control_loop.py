"""Drive a policy at a fixed control rate against the service, with action chunks and deadlines.

    python examples/control_loop.py --url http://127.0.0.1:8000 --key vla_live_... --model pi0 --hz 10 --seconds 20

The control thread ticks at exactly --hz and executes one action per tick from a ChunkPlayer; a fetcher
thread asks for the next chunk while the current one still has actions left (enough to cover the observed
p90 latency), with a deadline equal to the time those actions last, so a chunk that would arrive too late is
never computed. A tick with no action left is counted as starved (a real robot would hold its pose). At the
end it prints the achieved rate, request latency percentiles, starved ticks and refusals, then one JSON line.

The "robot" here is synthetic: a moving gradient as the camera image(s) and a zero state vector.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections import Counter

import numpy as np
from vlaapi_client import ChunkPlayer, VLAClient, VLAError


def camera(t: float, size: int = 224) -> np.ndarray:
    x = np.linspace(0, 1, size)
    img = np.stack([np.add.outer(x, x * 0) * 255, np.add.outer(x * 0, x) * 255,
                    np.full((size, size), (math.sin(t) + 1) * 127)], axis=-1)
    return img.astype(np.uint8)


class Robot:
    """What the loop needs from the model: its cameras, state size and chunk length (GET /v1/models/list)."""

    def __init__(self, client: VLAClient, model: str):
        spec = next((m for m in client.models() if m["name"] == model), {})
        self.cameras = spec.get("cameras") or ["primary"]
        self.state_dim = spec.get("state_dim")
        self.chunk_length = spec.get("chunk_length") or 1

    def observe(self, t: float) -> tuple[object, np.ndarray | None]:
        img = camera(t)
        images = img if len(self.cameras) == 1 else {c: img for c in self.cameras[:2]}
        return images, (np.zeros(self.state_dim) if self.state_dim else None)


class Loop:
    def __init__(self, client: VLAClient, robot: Robot, args: argparse.Namespace):
        self.client, self.robot, self.args = client, robot, args
        self.period = 1.0 / args.hz
        self.player = ChunkPlayer(horizon=args.horizon)
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.first_error: dict[str, str] = {}
        self.stop = threading.Event()
        self.wake = threading.Event()

    def fetch_forever(self) -> None:
        while not self.stop.is_set():
            if not self._want_more():
                self.wake.wait(self.period / 4)
                self.wake.clear()
                continue
            left = self.player.remaining
            # The new chunk is useful only if it arrives before the current one runs out.
            deadline_ms = max(self.args.min_deadline_ms, int(left * self.period * 1000)) if left else \
                self.args.deadline_ms
            images, state = self.robot.observe(time.monotonic())
            t0 = time.perf_counter()
            try:
                actions = self.client.act(images, self.args.instruction, state=state, deadline_ms=deadline_ms)
            except VLAError as err:
                self.errors[type(err).__name__] += 1
                self.first_error.setdefault(type(err).__name__, str(err))
                time.sleep(min(err.retry_after or 0.05, 1.0))
                continue
            self.latencies.append((time.perf_counter() - t0) * 1000)
            self.player.push(actions)

    def _want_more(self) -> bool:
        p90 = np.percentile(self.latencies, 90) / 1000 if self.latencies else self.period
        return self.player.remaining <= math.ceil(p90 / self.period)

    def control(self, seconds: float) -> dict[str, float]:
        ticks = starved = 0
        late: list[float] = []
        start = time.monotonic()
        for i in range(round(seconds / self.period)):
            next_tick = start + i * self.period  # an absolute schedule: lateness never accumulates
            time.sleep(max(0.0, next_tick - time.monotonic()))
            late.append((time.monotonic() - next_tick) * 1000)
            action = self.player.next()  # a real robot would send it to its controller here
            starved += action is None
            ticks += 1
            self.wake.set()
        # Sleep out the last tick's period, so that rate = ticks / elapsed.
        time.sleep(max(0.0, start + ticks * self.period - time.monotonic()))
        return {"ticks": ticks, "starved": starved, "elapsed_s": time.monotonic() - start,
                "tick_late_p99_ms": float(np.percentile(late, 99))}


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    return {f"p{q}": round(float(np.percentile(xs, q)), 2) for q in (50, 90, 99)} | {"max": round(max(xs), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("VLA_API_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("VLA_API_KEY"), help="or VLA_API_KEY")
    p.add_argument("--model", help="default: the first ready model")
    p.add_argument("--instruction", default="pick up the red block")
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--horizon", type=int, help="actions executed per chunk (default: the whole chunk)")
    p.add_argument("--deadline-ms", type=int, default=5000, help="deadline when no action is left")
    p.add_argument("--min-deadline-ms", type=int, default=50)
    args = p.parse_args()
    if not args.key:
        p.error("an API key is needed: --key or VLA_API_KEY")
    client = VLAClient(args.url, args.key, model=args.model, max_retries=2)
    model = client.model or client.default_model()
    loop = Loop(client, Robot(client, model), args)
    # One request before the loop, as robot code does: the first one through a cold path is not typical.
    t0 = time.perf_counter()
    images, state = loop.robot.observe(0.0)
    client.act(images, args.instruction, state=state)
    warmup_ms = (time.perf_counter() - t0) * 1000
    fetcher = threading.Thread(target=loop.fetch_forever, daemon=True)
    fetcher.start()
    stats = loop.control(args.seconds)
    loop.stop.set()
    fetcher.join(timeout=5)
    report = {"model": model, "target_hz": args.hz, "achieved_hz": round(stats["ticks"] / stats["elapsed_s"], 2),
              "ticks": stats["ticks"], "acted": stats["ticks"] - stats["starved"], "starved": stats["starved"],
              "tick_late_p99_ms": round(stats["tick_late_p99_ms"], 2), "chunks": len(loop.latencies),
              "chunk_length": loop.robot.chunk_length, "latency_ms": percentiles(loop.latencies),
              "errors": dict(loop.errors), "retries": client.http.retries,
              "warmup_ms": round(warmup_ms, 1)}
    print(f"{model}: {report['achieved_hz']} Hz achieved of {args.hz} Hz; {report['acted']}/{report['ticks']} ticks "
          f"acted, {report['starved']} starved; {report['chunks']} chunks of {report['chunk_length']}")
    print(f"request latency ms: {report['latency_ms']}; errors: {report['errors'] or 'none'}")
    for name, text in loop.first_error.items():
        print(f"  first {name}: {text}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
