"""The websocket server: `ws://HOST:PORT/v1/openpi/<model>`, openpi's protocol, one asyncio loop per process.

The handshake checks the path, the key (`Authorization: Api-Key <key>`, or Bearer) and the connection cap
before upgrading, so a refused client gets an HTTP status, not a websocket. Each observation then runs in a
thread of a bounded pool through web.compat.openpi.session (the synchronous admission path). A connection
is request/response, so it holds at most one pool thread, only while its observation is being served.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import websockets
from flask import Flask
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from web.compat.arrays import ArrayError
from web.compat.openpi import codec, mappings, session
from web.errors import PROBLEM_BASE, ApiError, is_backend_error
from web.services import catalog

log = logging.getLogger("web.openpi")
PATH = re.compile(r"^/v1/openpi/(?P<model>[^/?]+)$")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    threads: int = 32
    max_message_bytes: int = 32 * 1024 * 1024


class OpenpiServer:
    def __init__(self, app: Flask, limits: Limits):
        self.app, self.limits = app, limits
        self.pool = ThreadPoolExecutor(limits.threads, thread_name_prefix="openpi")
        self.open = 0

    async def run(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        async with serve(self.handler, host, port, compression=None, max_size=self.limits.max_message_bytes,
                         process_request=self.process_request) as server:
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
        if self.open >= self.limits.max_connections:
            return _refuse(ws, ApiError(503, "too_many_connections", "this openpi process is full; retry shortly"))
        try:
            conn = self._connection(match["model"], request, parse_qs(url.query))
            await self._call(session.check_key, self.app, conn.authorization)
        except ApiError as err:
            return _refuse(ws, err)
        except Exception as exc:  # the key check reads PostgreSQL: down is a 503 with Retry-After, as on REST
            if not is_backend_error(exc):
                raise
            log.error("backend unavailable at the handshake: %s", type(exc).__name__)
            return _refuse(ws, ApiError(503, "backend_unavailable", "a backing service is unreachable; retry "
                                        "shortly", headers={"Retry-After": "2"}))
        ws.vla_connection = conn  # type: ignore[attr-defined]  # read by the handler once upgraded
        return None

    def _connection(self, model: str, request: Request, query: dict[str, list[str]]) -> session.Connection:
        catalog.require_model(self.app.config["SETTINGS"], model)
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
        self.open += 1
        try:
            await ws.send(codec.packb(await self._call(session.metadata, self.app, conn)))
            async for message in ws:
                started = time.monotonic()
                await ws.send(await self._serve_one(conn, message))
                conn.prev_total_ms = (time.monotonic() - started) * 1000
        except websockets.ConnectionClosed:
            pass
        finally:
            self.open -= 1

    async def _serve_one(self, conn: session.Connection, message: str | bytes) -> str | bytes:
        """The response frame: msgpack bytes, or a text frame (the client raises it) for any refusal.
        The connection stays open after an error, so a robot can retry on it."""
        try:
            if isinstance(message, str):
                raise ArrayError("observations are binary msgpack frames")
            obs = codec.unpackb(message)
            return codec.packb(await self._call(session.infer, self.app, conn, obs))
        except ArrayError as exc:
            return session.problem_text(ApiError(422, "invalid_observation", str(exc)))
        except ApiError as err:
            return session.problem_text(err)
        except Exception as exc:  # BACKEND_ERRORS, and a DatabaseError on a dead connection (is_backend_error)
            if is_backend_error(exc):
                log.error("backend unavailable: %s", type(exc).__name__)
                return session.problem_text(ApiError(503, "backend_unavailable", "a backing service is "
                                                     "unreachable; retry shortly"))
            log.exception("openpi message failed")
            return session.problem_text(ApiError(500, "internal_error", "an unexpected error occurred"))

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


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
