"""CORS for browser clients, from CORS_ORIGINS (comma-separated origins, or '*')."""
from __future__ import annotations

from flask import Response, current_app, request

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
EXPOSED_HEADERS = "Location, Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    allowed = current_app.config["SETTINGS"].cors_origins
    if not origin or not allowed:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def preflight() -> Response | None:
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    resp = current_app.response_class(status=204)
    if _allowed_origin():
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        resp.headers["Access-Control-Max-Age"] = "600"
    return resp


def apply(response: Response) -> None:
    origin = _allowed_origin()
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")
