"""The openpi websocket door under attack (issue 21): print the longest event-loop stall a probe sees while an
attacker sends hostile frames, what the connection caps hold under 300 concurrent handshakes, and whether a
second customer still gets in.

    python -m ops.bench.abuse_ws [--seconds 10] [--server-src DIR]

Starts `python -m web.compat.openpi` (default limits: 256 connections, Free 4 / Pro 32 / Enterprise 128 per
customer) against DATABASE_URL / REDIS_URL or the embedded servers, in a scratch database and Redis db 10. No
model worker is needed: every case is refused before a job exists. `--server-src` runs the server from another
checkout's `web` package (e.g. `git archive <commit> web | tar -x -C DIR`) for a before/after comparison.
Targets: stall <= 20 ms with a probe pinging every 5 ms; the process cap never exceeded; the second customer
admitted. Last line: one JSON object. `python -m ops.bench.abuse` runs this after its HTTP cases.
"""
from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

import redis

from ops import stack
from ops.bench import openpi_attack as attack
from ops.bench.common import ROOT, emit, free_port, machine, spawn, stop, wait_http

LOGS = ROOT / ".data" / "bench-logs"
STALL_TARGET_MS = 20.0
MAX_CONNECTIONS = 256
MB30 = 30 * 1024 * 1024


def _env() -> dict[str, str]:
    db_url = stack.ensure_database(stack.ensure_postgres(), "vlaapi_abuse_ws", recreate=True)
    redis_url = stack.ensure_redis().rsplit("/", 1)[0] + "/10"
    redis.Redis.from_url(redis_url).flushdb()
    from workers.store.migrate import upgrade

    upgrade(db_url)
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "ENABLED_MODELS": "pi0-tiny",
            "API_KEY_PEPPER": f"abuse-{uuid.uuid4().hex}", "LOG_LEVEL": "WARNING",
            "OPENPI_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "MODEL_DIR": str(ROOT / ".data" / "test-models")}


def _keys(env: dict[str, str], tiers: list[str]) -> list[str]:
    from web.accounts import service
    from workers.store.db import session_scope

    keys = []
    with session_scope(env["DATABASE_URL"]) as s:
        for tier in tiers:
            customer = service.create_customer(s, f"abuse-ws-{uuid.uuid4().hex[:6]}", tier)
            keys.append(service.create_key(s, customer, env["API_KEY_PEPPER"])[1])
    return keys


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    return next(int(ln.split()[1]) for ln in open(f"/proc/{pid}/status") if ln.startswith(field + ":")) / 1024


def stall_cases(url: str, key: str, seconds: float) -> list[dict]:
    """The probe's round trips alone, then while a child process sends each hostile payload back to back."""
    with attack.StallProbe(url, key) as probe:
        time.sleep(seconds)
    rows = [{"case": "no attack (baseline)", "frame_mb": 0, "attacks": 0, "replies": [], **probe.summary()}]
    for name, build in attack.PAYLOADS.items():
        rows.append({"case": name, "frame_mb": round(len(build()) / 2**20, 1),
                     **attack.attack_while_probing(url, key, name, seconds)})
    return rows


def loop_costs(reps: int = 20) -> list[dict]:
    """What one frame costs the event loop itself, apart from the machine's scheduling noise: websockets'
    parse of the last chunk (where the frame is copied and unmasked) in this process, p50 and worst of `reps`;
    and the bounded decode (which the server runs in its decode pool, off the loop)."""
    import numpy as np
    from websockets.protocol import Protocol, Side, State

    from web.compat.openpi import codec
    from web.compat.openpi.limits import Limits, budget_for

    budget = budget_for(None, Limits())
    biggest = {f"observation/{i}": np.zeros(budget.bin_bytes, np.uint8) for i in range(4)}
    rows = []
    for name, payload in (("2.6 M nested empty maps", attack.nested_maps()),
                          ("4 images at the budget (legitimate)", codec.packb(biggest))):
        framed = attack.frame(payload)
        chunks = [framed[i:i + 65536] for i in range(0, len(framed), 65536)]
        parse, decode = [], []
        for _ in range(reps):
            proto = Protocol(Side.SERVER, state=State.OPEN, max_size=budget.frame_bytes)
            for c in chunks[:-1]:
                proto.receive_data(c)
            t0 = time.perf_counter()
            proto.receive_data(chunks[-1])
            parse.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            try:
                codec.unpackb(payload, budget)
            except ValueError:
                pass
            decode.append((time.perf_counter() - t0) * 1000)
        rows.append({"frame": name, "mb": round(len(payload) / 2**20, 1), "loop_parse_ms": _spread(parse),
                     "decode_ms_off_loop": _spread(decode)})
    return rows


def _spread(ms: list[float]) -> dict[str, float]:
    return {"p50": round(sorted(ms)[len(ms) // 2], 2), "worst": round(max(ms), 2)}


def cap_cases(url: str, keys: list[str]) -> list[dict]:
    """300 handshakes over three Enterprise keys (100 each, under their own cap of 128): the process cap binds.
    Then 300 from one Free key with a second customer's among them: the Free cap binds, the other gets in."""
    ent = keys[:3]
    started = time.perf_counter()
    statuses = attack.handshakes(url, [k for k in ent for _ in range(100)])
    rows = [{"case": "300 handshakes, 3 enterprise keys", "accepted": statuses.count(101),
             "cap": MAX_CONNECTIONS, "refused": {s: statuses.count(s) for s in sorted(set(statuses) - {101})},
             "wall_s": round(time.perf_counter() - started, 2)}]
    time.sleep(0.5)  # slots are released as the server sees each close
    started = time.perf_counter()
    first, second = attack.flood_with_second(url, keys[4], keys[5], n=300)
    rows.append({"case": "300 handshakes, one free key + 1 other", "accepted": first.count(101), "cap": 4,
                 "refused": {s: first.count(s) for s in sorted(set(first) - {101})},
                 "second_customer": second, "wall_s": round(time.perf_counter() - started, 2)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="attack time per stall case")
    parser.add_argument("--server-src", type=Path, help="a folder holding another checkout's `web` package")
    args = parser.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    env = _env()
    if args.server_src:  # `-m` puts the working directory first on sys.path: run from there
        env["PYTHONPATH"] = str(ROOT)
    keys = _keys(env, ["enterprise"] * 4 + ["free", "free"])
    port, log = free_port(), LOGS / "abuse-ws.log"
    log.write_bytes(b"")
    server = spawn(["web.compat.openpi", "--port", str(port)], env, log, cwd=args.server_src)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"ws://127.0.0.1:{port}/v1/openpi/pi0-tiny"
        rss_before = _rss_mb(server.pid)
        stalls = stall_cases(url, keys[3], args.seconds)
        rss_after, rss_peak = _rss_mb(server.pid), _rss_mb(server.pid, "VmHWM")
        caps = cap_cases(url, keys)
    finally:
        stop([server])
    return report(stalls, caps, loop_costs(), (rss_before, rss_after, rss_peak), args)


def report(stalls: list[dict], caps: list[dict], costs: list[dict], rss: tuple[float, float, float], args) -> dict:
    print(f"{'stall case':26} {'frame MB':>8} {'attacks':>7} {'pings':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'worst ms':>9}  replies")
    for r in stalls:
        print(f"{r['case']:26} {r['frame_mb']:>8} {r['attacks']:>7} {r['pings']:>6} {r['p50_ms']:>7} {r['p99_ms']:>7} "
              f"{r['worst_stall_ms']:>9}  {', '.join(r['replies'])}")
    print(f"server RSS: {rss[0]:.0f} MB before, {rss[1]:.0f} MB after, peak {rss[2]:.0f} MB")
    for r in caps:
        print(f"{r['case']}: {r['accepted']} accepted (cap {r['cap']}), refused {r['refused']}"
              + (f", second customer {r['second_customer']}" if "second_customer" in r else "")
              + f", {r['wall_s']} s")
    for r in costs:
        print(f"loop cost of one frame, {r['frame']} ({r['mb']} MB): parse p50 {r['loop_parse_ms']['p50']} ms, "
              f"worst {r['loop_parse_ms']['worst']} ms; decode (off the loop) p50 {r['decode_ms_off_loop']['p50']} ms")
    worst = max(r["worst_stall_ms"] for r in stalls[1:])
    ok = {"stall": worst <= STALL_TARGET_MS, "cap": all(r["accepted"] <= r["cap"] for r in caps),
          "second_customer": caps[1]["second_customer"] == 101}
    print(f"worst stall under attack {worst} ms (target {STALL_TARGET_MS}); within targets: {ok}")
    result = {"bench": "abuse_ws", "machine": machine(), "stalls": stalls, "caps": caps, "loop_costs": costs,
              "rss_mb": dict(zip(("before", "after", "peak"), rss, strict=True)), "within_target": ok,
              "server_src": str(args.server_src) if args.server_src else None}
    emit(result)
    return result


if __name__ == "__main__":
    main()
