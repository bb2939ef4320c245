"""What an openpi websocket connection costs, and the adapter's overhead over REST.

    python -m ops.bench.openpi --ws ws://127.0.0.1:8765/v1/openpi/openvla-tiny --http http://127.0.0.1:8000 \\
        --key vla_live_... --connections 200 --messages 50 --pid <pid of the openpi process>

Opens N idle connections (each receives its metadata) and reports the openpi process's resident memory
before and after (with --pid); then sends M observations one after another on one connection and the same
image M times to POST /v1/inference, and reports both latency distributions. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import requests
import websockets.sync.client
from PIL import Image

from ops.bench.common import summary_ms
from web.compat.openpi import codec


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def connect(url: str, key: str):
    ws = websockets.sync.client.connect(url, compression=None, max_size=None,
                                        additional_headers={"Authorization": f"Api-Key {key}"})
    codec.unpackb(ws.recv())
    return ws


def idle_cost(url: str, key: str, n: int, pid: int | None) -> dict:
    before = rss_kb(pid)
    t0 = time.perf_counter()
    conns = [connect(url, key) for _ in range(n)]
    handshake_ms = (time.perf_counter() - t0) * 1000 / max(n, 1)
    time.sleep(0.5)
    after = rss_kb(pid)
    for ws in conns:
        ws.close()
    per_conn = None if before is None or after is None else round((after - before) / max(n, 1), 1)
    return {"connections": n, "handshake_ms_each": round(handshake_ms, 2), "rss_kb_before": before,
            "rss_kb_after": after, "rss_kb_per_connection": per_conn}


def latencies(args, img: np.ndarray) -> dict:
    ws_lat, rest_lat = [], []
    with connect(args.ws, args.key) as ws:
        for i in range(args.messages + 1):  # the first of each is a warm-up, not counted
            t0 = time.perf_counter()
            ws.send(codec.packb({"observation/image": img, "prompt": "pick up the red block"}))
            reply = ws.recv()
            if isinstance(reply, str):
                raise SystemExit(f"the server refused: {reply}")
            if i:
                ws_lat.append(time.perf_counter() - t0)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    body = {"model": args.ws.rstrip("/").rsplit("/", 1)[-1], "image": base64.b64encode(buf.getvalue()).decode(),
            "instruction": "pick up the red block"}
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {args.key}"
        for i in range(args.messages + 1):
            t0 = time.perf_counter()
            s.post(args.http.rstrip("/") + "/v1/inference", json=body, timeout=60).raise_for_status()
            if i:
                rest_lat.append(time.perf_counter() - t0)
    return {"openpi_ws": summary_ms(ws_lat), "rest_inference": summary_ms(rest_lat)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ws", required=True)
    p.add_argument("--http", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--messages", type=int, default=50)
    p.add_argument("--pid", type=int)
    args = p.parse_args()
    img = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    out = {"idle": idle_cost(args.ws, args.key, args.connections, args.pid), **latencies(args, img)}
    print(f"idle connections: {out['idle']}")
    print(f"sequential latency, openpi websocket: {out['openpi_ws']}")
    print(f"sequential latency, POST /v1/inference: {out['rest_inference']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
