"""The websocket server: `ws://HOST:PORT/v1/openpi/<model>`, openpi's protocol, one asyncio loop per process.

The handshake checks the path, the key (`Authorization: Api-Key <key>`, or Bearer), then reserves a slot under
the customer's cap (by tier) and the process's, before upgrading, so a refused client gets an HTTP status, not a
websocket. Each frame then costs the loop nothing but its bytes: a cheap limiter peek (429 before decoding), a
bounded decode in a small pool of its own (web.compat.openpi.codec, sized by web.compat.openpi.limits), and
the synchronous admission path (web.compat.openpi.session) in a thread of a bounded pool. A connection is
request/response, so it holds at most one pool thread, only while its observation is being served.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy.exc
import websockets
from flask import Flask
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from web.compat.arrays import ArrayError
from web.compat.openpi import codec, mappings, session
from web.compat.openpi.limits import FrameBudget, Limits, Slot, Slots, budget_for
from web.errors import PROBLEM_BASE, ApiError, is_backend_error
from web.input_guard import check_text
from web.services import catalog

log = logging.getLogger("web.openpi")
PATH = re.compile(r"^/v1/openpi/(?P<model>[^/?]+)$")


class OpenpiServer:
    def __init__(self, app: Flask, limits: Limits):
        self.app, self.limits = app, limits
        self.pool = ThreadPoolExecutor(limits.threads, thread_name_prefix="openpi")
        # Decoding has its own few threads, so a flood of frames cannot take the threads admission runs in.
        self.decode_pool = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="openpi-decode")
        self.slots = Slots(limits.max_connections)
        # A customer's share of the pool: its observations beyond it wait on the loop (holding no thread), so
        # a key with many connections (a Pro key may have 32 jobs in flight) cannot take every thread.
        self.shares: dict[str, asyncio.Semaphore] = {}
        self._watchers: set[asyncio.Task] = set()

    @property
    def open(self) -> int:
        return self.slots.total

    async def run(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        # compression=None: permessage-deflate is never negotiated (a client offering it gets plain frames), so
        # a frame's size on the wire is its size in memory; a compressed frame (RSV1) fails the connection.
        async with serve(self.handler, host, port, compression=None, max_size=self.limits.max_message_bytes,
                         max_queue=self.limits.max_queue, process_request=self.process_request) as server:
            log.info("openpi websocket server on ws://%s:%d/v1/openpi/<model>", host, port)
            if ready:
                ready.set()
            await server.serve_forever()

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return ws.respond(http.HTTPStatus.OK, "OK\n")
        match = PATH.match(url.path)
        if not match:
            return _refuse(ws, ApiError(404, "not_found", "the openpi endpoint is /v1/openpi/<model>"))
        if self.slots.full():  # a shortcut only: the slot itself is reserved below, after the key is known
            return _refuse(ws, ApiError(503, "too_many_connections", "this openpi process is full; retry shortly",
                                        headers={"Retry-After": "2"}))
        try:
            conn = self._connection(match["model"], request, parse_qs(url.query))
            principal, spec = await self._call(session.handshake, self.app, conn)
            cap = self.app.config["SETTINGS"].openpi_connections_for(principal.tier)
            slot = self.slots.reserve(principal.customer_id, cap)  # no await since the check: atomic
            conn.customer_id = principal.customer_id
        except ApiError as err:
            return _refuse(ws, err)
        except Exception as exc:  # the key check reads PostgreSQL: down is a 503 with Retry-After, as on REST
            if not is_backend_error(exc):
                raise
            log.error("backend unavailable at handshake: %s", type(exc).__name__)
            return _refuse(ws, _backend_down())
        budget = budget_for(spec, self.limits)
        ws.protocol.max_message_size = budget.frame_bytes  # this model's frames; larger ones: close 1009
        ws.vla_connection, ws.vla_budget = conn, budget  # type: ignore[attr-defined]  # read by the handler
        watcher = asyncio.get_running_loop().create_task(self._release_when_closed(ws, slot))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return None

    async def _release_when_closed(self, ws: ServerConnection, slot: Slot) -> None:
        """The slot is released when the TCP connection ends, whether or not the handler ever ran (a client
        that vanishes mid-handshake never reaches it)."""
        try:
            await ws.wait_closed()
        finally:
            slot.release()
            if slot.customer_id not in self.slots.by_customer:
                self.shares.pop(slot.customer_id, None)

    def _share(self, customer_id: str) -> asyncio.Semaphore:
        share = self.shares.get(customer_id)
        if share is None:
            share = self.shares[customer_id] = asyncio.Semaphore(min(self.limits.customer_threads,
                                                                     self.limits.threads))
        return share

    def _connection(self, model: str, request: Request, query: dict[str, list[str]]) -> session.Connection:
        catalog.require_model(self.app.config["SETTINGS"], model)
        for name, values in query.items():  # the input guard's rule for query strings, as on REST
            for value in (name, *values):
                check_text(value, name)
        mapping = (query.get("mapping") or [default_mapping(model)])[0]
        if mapping not in mappings.NAMES:
            raise ApiError(422, "unknown_mapping", f"mapping must be one of {', '.join(mappings.NAMES)}")
        deadline = (query.get("deadline_ms") or [""])[0]
        if deadline and not deadline.isdigit():
            raise ApiError(422, "invalid_deadline", "deadline_ms must be a positive integer")
        return session.Connection(model=model, authorization=request.headers.get("Authorization", ""),
                                  mapping=mapping, prompt=(query.get("prompt") or [None])[0],
                                  deadline_ms=int(deadline) if deadline else None,
                                  robot_type=(query.get("robot_type") or [None])[0])

    async def handler(self, ws: ServerConnection) -> None:
        conn: session.Connection = ws.vla_connection  # type: ignore[attr-defined]
        budget: FrameBudget = ws.vla_budget  # type: ignore[attr-defined]
        idle = self.limits.idle_timeout_s
        try:
            await ws.send(codec.packb(await self._call(session.metadata, self.app, conn)))
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), idle)  # cancelling recv() loses nothing
                except TimeoutError:
                    await ws.close(1000, f"idle for {idle:g} s")
                    return
                started = time.monotonic()
                async with self._share(conn.customer_id):
                    reply = await self._serve_one(conn, budget, message)
                await ws.send(reply)
                conn.prev_total_ms = (time.monotonic() - started) * 1000
        except websockets.ConnectionClosed:
            pass

    async def _serve_one(self, conn: session.Connection, budget: FrameBudget, message: str | bytes) -> str | bytes:
        """The response frame: msgpack bytes, or a text frame (the client raises it) for any refusal.
        The connection stays open after an error, so a robot can retry on it."""
        try:
            if isinstance(message, str):
                raise ArrayError("observations are binary msgpack frames")
            await self._call(session.precheck, self.app, conn)  # 429 before any decoding or image work
            obs = await asyncio.get_running_loop().run_in_executor(self.decode_pool, _decode, message, budget)
            return codec.packb(await self._call(session.infer, self.app, conn, obs))
        except ArrayError as exc:
            return session.problem_text(ApiError(422, "invalid_observation", str(exc)))
        except ApiError as err:
            return session.problem_text(err)
        except sqlalchemy.exc.DataError as exc:  # a value PostgreSQL refuses: a gap in the guard, still a 422
            if is_backend_error(exc):
                log.error("backend unavailable: %s", type(exc).__name__)
                return session.problem_text(_backend_down())
            log.warning("database refused a value: %s", type(exc).__name__)  # never the statement's parameters
            return session.problem_text(ApiError(422, "invalid_value", "a value in this request cannot be stored"))
        except Exception as exc:  # BACKEND_ERRORS, and a DatabaseError on a dead connection (is_backend_error)
            if is_backend_error(exc):
                log.error("backend unavailable: %s", type(exc).__name__)
                return session.problem_text(_backend_down())
            if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
                log.error("openpi message failed: %s", type(exc).__name__)  # never the statement's parameters
                return session.problem_text(ApiError(500, "internal_error", "an unexpected error occurred"))
            log.exception("openpi message failed")
            return session.problem_text(ApiError(500, "internal_error", "an unexpected error occurred"))

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def _decode(message: bytes, budget: FrameBudget) -> Any:
    """In the decode pool: the bounded unpack, then the input guard over every string of the observation."""
    obs = codec.unpackb(message, budget)
    codec.check_observation(obs)
    return obs


def _backend_down() -> ApiError:
    return ApiError(503, "backend_unavailable", "a backing service is unreachable; retry shortly",
                    headers={"Retry-After": "2"}, retry_after_s=2)


def default_mapping(model: str) -> str:
    """OPENPI_INPUT_MAPPINGS=model=layout,... names each model's layout; `auto` detects it per message."""
    import os

    pairs = (item.split("=", 1) for item in os.environ.get("OPENPI_INPUT_MAPPINGS", "").split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}.get(model, "auto")


def _refuse(ws: ServerConnection, err: ApiError) -> Response:
    title = err.code.replace("_", " ").capitalize()
    body = json.dumps({"type": PROBLEM_BASE + err.code, "title": title, "status": err.status, "detail": err.detail,
                       **({"field": err.field} if err.field else {})})
    resp = ws.respond(http.HTTPStatus(err.status), body + "\n")
    resp.headers["Content-Type"] = "application/problem+json"
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp
