"""Drive a policy at a fixed control rate against the service, with action chunks and deadlines.

    python examples/control_loop.py --url http://127.0.0.1:8000 --key vla_live_... --model pi0 --hz 10 --seconds 20

The control thread ticks at exactly --hz and executes one action per tick from a ChunkPlayer (a queue: no
action is ever dropped); a fetcher thread asks for the next chunk only when the queued actions cover less than
the expected latency (p90 of recent requests, plus a quarter), with a deadline equal to the time those actions
last, so a chunk that would arrive too late is never computed and no more is asked than the rate consumes. A
tick with no action left is counted as starved (a real robot would hold its pose). At the end it prints the
achieved rate, the on-time fraction (ticks that found an action), requests per tick, request latency
percentiles and refusals, then one JSON line.

`--mode switch` replaces the queue with each new chunk (less the actions played while it was computed) and asks
one latency earlier, so chunks overlap; `--mode rtc` does the same and sends the un-executed remainder and the
expected delay in ticks (real-time chunking, for models listed with real_time_chunking: true), so the new chunk
continues the executing one. By default (`--mode auto`) a flow policy runs with `rtc`, any other model with
`append`. The report then measures smoothness: the largest jump between consecutive
executed actions at a chunk boundary, the same inside chunks, and the largest gap between a new chunk's first
action and the old chunk's plan for that tick. Compare the two modes at the same --hz:

    python examples/control_loop.py --model pi0-tiny --hz 10 --seconds 20 --mode switch
    python examples/control_loop.py --model pi0-tiny --hz 10 --seconds 20 --mode rtc

The "robot" here is synthetic: a moving gradient as the camera image(s) and a zero state vector.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
from vlaapi_client import VLAClient
from vlaapi_client.control import MODES, ControlLoop, jump_stats


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
        self.real_time_chunking = bool(spec.get("real_time_chunking"))

    def observe(self, t: float) -> tuple[object, np.ndarray | None]:
        img = camera(t)
        images = img if len(self.cameras) == 1 else {c: img for c in self.cameras[:2]}
        return images, (np.zeros(self.state_dim) if self.state_dim else None)


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
    p.add_argument("--deadline-ms", type=int, default=5000, help="deadline of the warm-up request")
    p.add_argument("--min-deadline-ms", type=int, default=50)
    p.add_argument("--mode", choices=("auto", *MODES), default="auto",
                   help="append chunks, switch to each new chunk, or switch with real-time chunking; auto (default): "
                        "rtc for flow policies (real_time_chunking in the models list), append otherwise")
    p.add_argument("--seed", type=int, help="a fixed noise seed for every request (flow policies)")
    p.add_argument("--rtc-jacobian", choices=("vjp", "identity"), help="real-time chunking's guidance (service "
                   "default vjp; identity is LeRobot 0.6.1's, without a backward pass)")
    p.add_argument("--safety-mode", choices=("reject", "clamp", "monitor"),
                   help="the safety stage's mode (default: the service's); monitor returns the model's actions")
    args = p.parse_args()
    if not args.key:
        p.error("an API key is needed: --key or VLA_API_KEY")
    client = VLAClient(args.url, args.key, model=args.model, max_retries=2)
    model = client.model or client.default_model()
    robot = Robot(client, model)
    if args.mode == "auto":
        args.mode = "rtc" if robot.real_time_chunking else "append"
    if args.mode == "rtc" and not robot.real_time_chunking:
        p.error(f"{model} does not list real_time_chunking: it is not a flow policy")
    options = {} if args.seed is None else {"seed": args.seed}
    if args.safety_mode:
        options["safety"] = {"mode": args.safety_mode}

    def fetch(deadline_ms: int, rtc: dict | None = None) -> np.ndarray:
        images, state = robot.observe(time.monotonic())
        extra = options | ({"rtc": rtc} if rtc else {})
        return client.act(images, args.instruction, state=state, deadline_ms=deadline_ms, **extra)

    loop = ControlLoop(fetch, args.hz, horizon=args.horizon, min_deadline_ms=args.min_deadline_ms, mode=args.mode,
                       rtc_options={"jacobian": args.rtc_jacobian} if args.rtc_jacobian else None)
    # One request before the loop, as robot code does; its action is the robot's first move (queued, not
    # thrown away) and its latency the fetcher's first estimate. It is not counted in `requests`.
    warmup_ms = loop.warm_up(args.deadline_ms)
    stats = loop.run(args.seconds)
    report = {"model": model, "target_hz": args.hz, "achieved_hz": round(stats["ticks"] / stats["elapsed_s"], 2),
              "ticks": stats["ticks"], "acted": stats["ticks"] - stats["starved"], "starved": stats["starved"],
              "on_time": stats["on_time"], "requests": stats["requests"],
              "requests_per_tick": stats["requests_per_tick"],
              "tick_late_p99_ms": round(stats["tick_late_p99_ms"], 2), "chunks": len(loop.latencies),
              "chunk_length": robot.chunk_length, "latency_ms": percentiles(loop.latencies),
              "errors": dict(loop.errors), "retries": client.http.retries,
              "warmup_ms": round(warmup_ms, 1), "mode": args.mode,
              "latency_periods_p50": round(float(np.median(loop.latencies)) / 1000 * args.hz, 2) if loop.latencies
              else None, "inference_delay": percentiles([float(d) for d in loop.delays]),
              **jump_stats([a for a in loop.executed if a is not None], loop.player.switches)}
    print(f"{model}: {report['achieved_hz']} Hz achieved of {args.hz} Hz; {report['acted']}/{report['ticks']} ticks "
          f"on time ({report['on_time']:.1%}), {report['starved']} starved; {report['requests']} requests "
          f"({report['requests_per_tick']} per tick); {report['chunks']} chunks of {report['chunk_length']}")
    print(f"request latency ms: {report['latency_ms']}; errors: {report['errors'] or 'none'}")
    if args.mode != "append":
        print(f"mode {args.mode}: largest jump at a chunk boundary {report['boundary_jump_max']} "
              f"({report['boundaries']} boundaries), inside chunks {report['interior_step_max']}; largest gap to the "
              f"old chunk's plan {report['plan_gap_max']}")
    for name, text in loop.first_error.items():
        print(f"  first {name}: {text}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
