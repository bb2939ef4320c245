"""Our doors against the servers a user would run instead, on the same tiny policy objects, same run:

    python -m ops.bench.peers --openpi-server-path /path/to/openpi/src/openpi/serving/websocket_policy_server.py \\
        [--duration 20] [--rounds 4] [--clients 1,8]

(or `--openpi-server-module openpi.serving.websocket_policy_server` where openpi is installed). openpi's server
is never copied into this project: fetch openpi (github.com/Physical-Intelligence/openpi) and give its path.
The deploy.py-style peer needs the `bench` extra: `.venv/bin/pip install -e '.[bench]'` (FastAPI, uvicorn).

Pairs, each driven by the peer's own client: openpi's `WebsocketPolicyServer` vs our openpi door (pi0-tiny,
openpi-client's WebsocketClientPolicy, a libero observation: two 224x224 cameras, an 8-D state); a
deploy.py-style FastAPI server (ops/bench/peer_servers.py) vs our `/act` (openvla-tiny, a deploy.py client:
requests + json-numpy, one 224x224 image); and POST /v1/inference with the libero images alongside, as PNG in
JSON and as raw arrays in msgpack.
Every path runs in `--rounds` slices per client count, taken in turns with the order flipped each round (as
ops/bench/pipeline.py), with the load average recorded, since the host is shared. Then 40 sequential
REST requests of each body give our per-stage breakdown (the job's `performance`, Server-Timing). Last line: one JSON.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import time
from collections.abc import Callable
from typing import Any

import json_numpy
import numpy as np
import requests
from PIL import Image

from ops.bench.common import (
    closed_loop,
    emit,
    free_port,
    machine,
    server_timing,
    spawn,
    stop,
    summary_ms,
    wait_http,
)
from ops.bench.pipeline import LOGS, bench_key, start_ours, wait_ready
from ops.bench.scratch import scratch_stack
from ops.procfile import gpu_worker_argv

PI0, OPENVLA = "pi0-tiny", "openvla-tiny"
MakeCall = Callable[[int], Callable[[int], None]]  # clients -> call(i)


def observations(seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    libero = {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
              "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
              "observation/state": rng.random(8).astype(np.float32), "prompt": "pick up the black bowl"}
    return libero, rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def openpi_path(url: str, obs: dict, key: str | None) -> MakeCall:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    def make(clients: int) -> Callable[[int], None]:
        conns = [WebsocketClientPolicy(host=url, api_key=key) for _ in range(clients)]
        return lambda i: _check_chunk(conns[i].infer(obs))

    return make


def _check_chunk(out: dict) -> None:
    if np.asarray(out["actions"]).ndim != 2:
        raise RuntimeError(f"no action chunk: {out}")


def deploy_path(url: str, image: np.ndarray, key: str | None) -> MakeCall:
    """deploy.py's client: requests + json-numpy, the image as an array; the body is encoded per call."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def make(clients: int) -> Callable[[int], None]:
        sessions = [requests.Session() for _ in range(clients)]

        def call(i: int) -> None:
            body = json_numpy.dumps({"image": image, "instruction": "pick up the red block",
                                     "unnorm_key": "bridge_orig"})
            r = sessions[i].post(url, data=body, headers=headers, timeout=60)
            if r.status_code != 200:
                raise RuntimeError(r.text[:200])
            json_numpy.loads(r.text)

        return call

    return make


def msgpack_body(body: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The REST body as msgpack with the cameras as raw arrays (openpi's msgpack-numpy): nothing encoded."""
    from openpi_client import msgpack_numpy

    return msgpack_numpy.packb({**{k: v for k, v in body.items() if k != "images"}, "images": arrays})


def _post_kwargs(body: dict | bytes, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    if isinstance(body, bytes):
        return {"data": body, "headers": {**headers, "Content-Type": "application/msgpack"}}
    return {"json": body, "headers": headers}


def rest_path(url: str, body: dict | bytes, key: str) -> MakeCall:
    """POST /v1/inference with a JSON body (PNG cameras) or a msgpack one (bytes: raw arrays)."""
    def make(clients: int) -> Callable[[int], None]:
        sessions = [requests.Session() for _ in range(clients)]
        kwargs = _post_kwargs(body, key)

        def call(i: int) -> None:
            r = sessions[i].post(url, timeout=60, **kwargs)
            if r.status_code != 200:
                raise RuntimeError(r.text[:200])

        return call

    return make


def interleaved(paths: dict[str, MakeCall], clients: int, duration: float, rounds: int) -> dict[str, dict]:
    calls = {name: make(clients) for name, make in paths.items()}  # connections opened outside the timing
    pooled: dict[str, dict] = {name: {"lat": [], "errors": 0, "load": []} for name in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            res = closed_loop(calls[name], clients, duration / rounds, warmup_s=0.5, keep=True)
            pooled[name]["lat"] += res["latencies_s"]
            pooled[name]["errors"] += res["errors"]
            pooled[name]["load"].append(os.getloadavg()[0])
    return {name: {"clients": clients, "throughput_rps": round(len(p["lat"]) / duration, 2), "errors": p["errors"],
                   "loadavg_1m": [round(x, 2) for x in p["load"]], **summary_ms(p["lat"])}
            for name, p in pooled.items()}


def breakdown(url: str, body: dict | bytes, key: str, n: int = 40) -> dict[str, Any]:
    """Medians of our per-stage figures over n sequential POST /v1/inference (after 5 warm-ups)."""
    perf: dict[str, list[float]] = {}
    kwargs = _post_kwargs(body, key)
    with requests.Session() as s:
        for i in range(n + 5):
            r = s.post(url, timeout=60, **kwargs)
            r.raise_for_status()
            if i < 5:
                continue
            p = r.json()["performance"]
            flat = {**{k: v for k, v in p.items() if isinstance(v, int | float)},
                    **{f"model.{k}": v for k, v in (p.get("model_timings_ms") or {}).items()}}
            flat.update({f"server_timing.{name}": ms for name, ms in server_timing(r.headers).items()})
            for k, v in flat.items():
                perf.setdefault(k, []).append(float(v))
    return {k: {"p50": round(float(np.median(v)), 3), "p90": round(float(np.percentile(v, 90)), 3)}
            for k, v in sorted(perf.items())}


def ratios(results: dict) -> dict[str, float]:
    """The issue's targets: ours / peer at 1 client (p50, target <= 1.5), throughput ours / peer at 8 (>= 1.2)."""
    out = {}
    for ours, peer in (("openpi_door", "openpi_server"), ("act", "deploy_py")):
        a, b = results.get(f"{ours}_c1"), results.get(f"{peer}_c1")
        if a and b:
            out[f"{ours}_over_{peer}_p50_c1"] = round(a["p50_ms"] / b["p50_ms"], 3)
        a, b = results.get(f"{ours}_c8"), results.get(f"{peer}_c8")
        if a and b and b["throughput_rps"]:
            out[f"{ours}_over_{peer}_rps_c8"] = round(a["throughput_rps"] / b["throughput_rps"], 3)
    return out


def start_all(env: dict[str, str], args: argparse.Namespace) -> tuple[list, dict[str, int]]:
    ports = {name: free_port() for name in ("web", "door", "openpi", "deploy")}
    peer = (["--openpi-server-path", args.openpi_server_path] if args.openpi_server_path
            else ["--openpi-server-module", args.openpi_server_module])
    procs = start_ours(env, OPENVLA, ports["web"])
    procs += [spawn(gpu_worker_argv(PI0, concurrency=32), {**env, "WORKER_MODEL": PI0}, LOGS / "ours-gpu-pi0.log"),
              spawn(["web.compat.openpi", "--port", str(ports["door"])], env, LOGS / "ours-openpi.log"),
              spawn(["ops.bench.peer_servers", "openpi", "--port", str(ports["openpi"]), "--model", PI0, *peer], env,
                    LOGS / "peer-openpi.log"),
              spawn(["ops.bench.peer_servers", "deploy", "--port", str(ports["deploy"]), "--model", OPENVLA], env,
                    LOGS / "peer-deploy.log")]
    return procs, ports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--openpi-server-path", help="openpi's src/openpi/serving/websocket_policy_server.py")
    ap.add_argument("--openpi-server-module", default="openpi.serving.websocket_policy_server")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per path and client count, all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", default="1,8")
    args = ap.parse_args()
    env = scratch_stack("vlaapi_peers", 10, [OPENVLA, PI0])
    # The bench customer's tier ("bench") holds every connection the rounds open (1 + 8 per path): the door's
    # per-customer cap (OPENPI_TIER_CONNECTIONS) would otherwise refuse the ninth with 429.
    env["OPENPI_TIER_CONNECTIONS"] = "free=4,pro=32,enterprise=128,bench=64"
    key = bench_key(env)
    libero, image = observations()
    procs, ports = start_all(env, args)
    web = f"http://127.0.0.1:{ports['web']}"
    rest_body = {"model": PI0, "instruction": libero["prompt"], "state": libero["observation/state"].tolist(),
                 "images": {"base_0_rgb": _png_b64(libero["observation/image"]),
                            "left_wrist_0_rgb": _png_b64(libero["observation/wrist_image"])}}
    raw_body = msgpack_body(rest_body, {"base_0_rgb": libero["observation/image"],
                                        "left_wrist_0_rgb": libero["observation/wrist_image"]})
    results: dict[str, Any] = {"bench": "peers", "machine": machine(), "rounds": args.rounds,
                               "duration_s": args.duration, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        wait_http(f"{web}/health")
        wait_http(f"http://127.0.0.1:{ports['openpi']}/healthz", timeout=120)
        wait_http(f"http://127.0.0.1:{ports['deploy']}/docs", timeout=120)
        wait_ready(web, key, OPENVLA)
        wait_ready(web, key, PI0)
        paths = {"openpi_door": openpi_path(f"ws://127.0.0.1:{ports['door']}/v1/openpi/{PI0}", libero, key),
                 "openpi_server": openpi_path(f"ws://127.0.0.1:{ports['openpi']}", libero, None),
                 "act": deploy_path(f"{web}/openvla/{OPENVLA}/act", image, key),
                 "deploy_py": deploy_path(f"http://127.0.0.1:{ports['deploy']}/act", image, None),
                 "rest_inference": rest_path(f"{web}/v1/inference", rest_body, key),
                 "rest_msgpack": rest_path(f"{web}/v1/inference", raw_body, key)}
        for clients in [int(c) for c in args.clients.split(",")]:
            for name, r in interleaved(paths, clients, args.duration, args.rounds).items():
                results[f"{name}_c{clients}"] = r
                print(f"{name:15s} clients={clients:2d} {r}", flush=True)
        results["ours_breakdown_ms"] = breakdown(f"{web}/v1/inference", rest_body, key)
        print(f"our per-stage breakdown (POST /v1/inference, {PI0}, PNG, 1 client): {results['ours_breakdown_ms']}")
        results["ours_breakdown_msgpack_ms"] = breakdown(f"{web}/v1/inference", raw_body, key)
        print(f"the same, raw arrays in msgpack: {results['ours_breakdown_msgpack_ms']}")
    finally:
        stop(procs)
    results["ratios"] = ratios(results)
    print(f"ratios: {results['ratios']}")
    emit(results)


if __name__ == "__main__":
    main()
