"""Where one openpi-door request's time goes, segment by segment, at one client:

    python -m ops.bench.door_timeline [--n 60]

pi0-tiny behind our openpi door (openpi-client's WebsocketClientPolicy, the libero observation of
ops/bench/peers.py), n sequential requests after 10 warm-ups. Each request's client timestamps are joined to
its job row's (created_at, started_at, inference_done_at, finished_at; one clock, one machine):

    client -> created      the client's frame, the door's decode, key, admission, images and message to Redis
    created -> started     the row's INSERT, the publish, the GPU worker's receipt and claim (queue wait)
    started -> inference   the image fetch and decode, the batcher and the forward pass
    inference -> finished  the hand-off to the safety worker and its check (finished_at is taken just before
                           the final UPDATE)
    finished -> client     the UPDATE and commit, the wake-up, the door's answer and the client's decode

Prints the medians and 90th percentiles of each; last line one JSON object.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sqlalchemy import create_engine, text

from ops.bench.common import emit, free_port, machine, spawn, stop, wait_http
from ops.bench.peers import PI0, observations
from ops.bench.pipeline import LOGS, bench_key, start_ours, wait_ready
from ops.bench.scratch import scratch_stack

SEGMENTS = ("client_to_created", "created_to_started", "started_to_inference_done", "inference_done_to_finished",
            "finished_to_client")
_ROWS = text("SELECT extract(epoch FROM created_at), extract(epoch FROM started_at), "
             "extract(epoch FROM inference_done_at), extract(epoch FROM finished_at) FROM jobs "
             "WHERE state = 'succeeded' ORDER BY created_at")


def segments(marks: list[tuple[float, float]], rows: list) -> dict[str, list[float]]:
    """Each request's five segments in ms: client (sent, received) joined to its row's four timestamps."""
    out: dict[str, list[float]] = {k: [] for k in SEGMENTS}
    for (sent, got), row in zip(marks, rows, strict=True):
        created, started, inferred, finished = (float(x) for x in row)
        for name, (a, b) in zip(SEGMENTS, ((sent, created), (created, started), (started, inferred),
                                           (inferred, finished), (finished, got)), strict=True):
            out[name].append((b - a) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    args = ap.parse_args()
    env = scratch_stack("vlaapi_timeline", 11, [PI0])
    key = bench_key(env)
    web, door = free_port(), free_port()
    procs = start_ours(env, PI0, web)
    procs.append(spawn(["web.compat.openpi", "--port", str(door)], env, LOGS / "timeline-openpi.log"))
    try:
        wait_http(f"http://127.0.0.1:{web}/health", timeout=120)
        wait_ready(f"http://127.0.0.1:{web}", key, PI0)
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        client = WebsocketClientPolicy(host=f"ws://127.0.0.1:{door}/v1/openpi/{PI0}", api_key=key)
        obs, _ = observations()
        for _ in range(10):
            client.infer(obs)
        marks = []
        for _ in range(args.n):
            sent = time.time()
            client.infer(obs)
            marks.append((sent, time.time()))
        with create_engine(env["DATABASE_URL"]).connect() as cx:
            rows = cx.execute(_ROWS).fetchall()[-args.n:]
    finally:
        stop(procs)
    segs = segments(marks, rows)
    total = [(got - sent) * 1e3 for sent, got in marks]
    result = {"bench": "door_timeline", "machine": machine(), "n": args.n,
              "total_ms": {"p50": round(float(np.median(total)), 2), "p90": round(float(np.percentile(total, 90)), 2)},
              **{k: {"p50": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2)}
                 for k, v in segs.items()}}
    for k in ("total_ms", *SEGMENTS):
        print(f"{k:28s} p50 {result[k]['p50']:7.2f} ms   p90 {result[k]['p90']:7.2f} ms")
    emit(result)


if __name__ == "__main__":
    main()
