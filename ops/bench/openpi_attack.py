"""Hostile openpi clients, shared by ops/bench/abuse_ws.py and tests/integration/test_openpi_hostile.py: raw
websocket frames (so a 30 MB frame costs the attacker one sendall, not a Python-side encode), a loop-stall
probe, and a flood of concurrent handshakes."""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import websockets.asyncio.client
import websockets.exceptions
import websockets.sync.client


def frame(payload: bytes, opcode: int = 0x2, rsv1: bool = False) -> bytes:
    """One client frame, masked with a zero key (a valid mask that leaves the payload as it is)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def empty_maps(total_bytes: int) -> bytes:
    """A msgpack array of empty maps, `total_bytes` long: the frame that stalled the loop for 5.7 s at 30 MB."""
    n = total_bytes - 5
    return b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n


def nested_maps(levels: int = 4, fanout: int = 40) -> bytes:
    """Arrays of `fanout` items nested `levels` deep, empty maps at the leaves: fanout**levels objects, each
    container within msgpack's per-object limits and the frame within the default budget (40**4: 2.6 M maps
    in 2.6 MB; 64**4: 16.7 M maps in 17.6 MB)."""
    out = b"\x80"
    for _ in range(levels):
        out = b"\xdc" + fanout.to_bytes(2, "big") + out * fanout
    return out


def connect(url: str, key: str, **kw) -> websockets.sync.client.ClientConnection:
    return websockets.sync.client.connect(url, additional_headers={"Authorization": f"Api-Key {key}"},
                                          max_size=None, ping_interval=None, open_timeout=60, **kw)


def send_raw(url: str, key: str, payload: bytes) -> str:
    """Open a connection, read the metadata, send one raw frame; the server's answer: a text frame's first
    line, or `closed <code>`."""
    ws = connect(url, key)
    try:
        ws.recv(timeout=30)
        with contextlib.suppress(OSError):  # the server may close before the rest is sent
            ws.socket.sendall(payload)
        reply = ws.recv(timeout=30)
        return reply.splitlines()[0] if isinstance(reply, str) else f"binary {len(reply)}"
    except websockets.exceptions.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None}"
    finally:
        ws.close()


class StallProbe:
    """Pings the server every `every_s` on its own connection; `worst_ms` is the longest round trip seen."""

    def __init__(self, url: str, key: str, every_s: float = 0.005):
        self.ws, self.every_s = connect(url, key), every_s
        self.ws.recv(timeout=30)
        self.rtts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            if not self.ws.ping().wait(30):
                raise RuntimeError("no pong within 30 s")
            self.rtts.append((time.perf_counter() - started) * 1000)
            time.sleep(self.every_s)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(40)
        self.ws.close()

    def summary(self) -> dict:
        rtts = sorted(self.rtts) or [float("nan")]
        return {"pings": len(self.rtts), "p50_ms": round(rtts[len(rtts) // 2], 1),
                "p99_ms": round(rtts[int(len(rtts) * 0.99)], 1), "worst_stall_ms": round(rtts[-1], 1)}


PAYLOADS: dict[str, Callable[[], bytes]] = {
    "30 MB of empty maps": lambda: frame(empty_maps(30 * 1024 * 1024)),
    "2.6 M nested empty maps": lambda: frame(nested_maps()),
}


def hammer(url: str, key: str, payload: str, seconds: float, out: Connection) -> None:
    """In a child process (its CPU is not the probe's): send PAYLOADS[payload] back to back on fresh
    connections for `seconds`; sends (attacks, distinct replies) back through `out`."""
    data, replies, n = PAYLOADS[payload](), set(), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        replies.add(send_raw(url, key, data))
        n += 1
    out.send((n, sorted(replies)))


def attack_while_probing(url: str, key: str, payload: str, seconds: float) -> dict:
    """The probe's round trips while a child process hammers the server with `payload`."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(target=hammer, args=(url, key, payload, seconds, theirs), daemon=True)
    with StallProbe(url, key) as probe:
        child.start()
        attacks, replies = mine.recv() if mine.poll(seconds + 120) else (0, ["attacker timed out"])
    child.join(10)
    return {"attacks": attacks, "replies": replies, **probe.summary()}


async def _one(url: str, key: str, held: list, statuses: list) -> None:
    try:
        ws = await websockets.asyncio.client.connect(url, additional_headers={"Authorization": f"Api-Key {key}"},
                                                     open_timeout=120, ping_interval=None)
    except websockets.exceptions.InvalidStatus as exc:
        statuses.append(exc.response.status_code)
    else:
        held.append(ws)
        statuses.append(101)


async def _flood(url: str, keys: list[str]) -> list[int]:
    """Every handshake at once, each accepted one held until all have an answer, then closed; the statuses
    in the order of `keys` (101: accepted)."""
    held: list = []
    lists: list[list[int]] = [[] for _ in keys]
    await asyncio.gather(*(_one(url, k, held, out) for k, out in zip(keys, lists, strict=True)))
    await asyncio.gather(*(ws.close() for ws in held))
    return [out[0] for out in lists]


def handshakes(url: str, keys: list[str]) -> list[int]:
    """One concurrent handshake per entry of `keys`; their statuses in the same order (101: accepted)."""
    return asyncio.run(_flood(url, keys))


def flood_with_second(url: str, first: str, second: str, n: int = 300) -> tuple[list[int], int]:
    """`n` concurrent handshakes of `first` with one of `second` among them: (first's statuses, second's)."""
    statuses = handshakes(url, [first] * (n // 2) + [second] + [first] * (n - n // 2))
    return statuses[: n // 2] + statuses[n // 2 + 1:], statuses[n // 2]
