"""The Flask application factory."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import kombu.exceptions
import redis
import sqlalchemy.exc
from flask import Flask, Response, g, request

from web import cors, db, metrics
from web.auth import authenticate
from web.errors import ApiError, from_api_error, from_backend_down, from_unexpected
from web.extensions import Api
from web.services import admission
from workers import logs
from workers.settings import DEV_PEPPER, get_settings

log = logging.getLogger("web.access")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        API_TITLE="VLA inference API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
    app.config.update(config or {})
    app.config.setdefault("SETTINGS", get_settings())
    if not app.config.get("TESTING"):
        logs.configure(app.config["SETTINGS"].log_level)
        if app.config["SETTINGS"].api_key_pepper == DEV_PEPPER:
            log.warning("API_KEY_PEPPER is the development default: set a secret before issuing real keys")
    db.init_app(app)
    # One Api per app: flask-smorest keeps the OpenAPI spec on the Api object, so a shared one would
    # collect duplicate paths when tests build several apps.
    _register_blueprints(Api(app))
    app.register_error_handler(ApiError, from_api_error)
    # sqlalchemy.exc.TimeoutError: every pooled connection is busy (the pool's timeout passed): retry shortly.
    for backend_error in (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
                          redis.ConnectionError,
                          redis.TimeoutError, kombu.exceptions.OperationalError):
        app.register_error_handler(backend_error, from_backend_down)
    app.register_error_handler(Exception, from_unexpected)
    app.before_request(_begin)
    app.after_request(_end)
    return app


def _register_blueprints(api: Api) -> None:
    from web.api.inference.resources import blp as inference_blp
    from web.api.jobs.resources import blp as jobs_blp
    from web.api.models.resources import blp as models_blp
    from web.api.replays.resources import blp as replays_blp
    from web.api.system.resources import blp as system_blp
    from web.api.usage.resources import blp as usage_blp

    for blp in (jobs_blp, inference_blp, models_blp, usage_blp, system_blp, replays_blp):
        api.register_blueprint(blp)


def _begin() -> Response | None:
    g.started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if 8 <= len(incoming) <= 64 and incoming.isascii() else f"req_{uuid.uuid4().hex}"
    logs.bind(request_id=g.request_id, customer_id=None)
    preflight = cors.preflight()
    if preflight is not None:
        return preflight
    if request.path.startswith("/v1/"):
        authenticate()
    return None


def _end(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    if "principal" in g and "extra_headers" not in g:
        g.extra_headers = admission.usage_headers(g.principal)
    for k, v in (g.get("extra_headers") or {}).items():
        response.headers.setdefault(k, v)
    cors.apply(response)
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    metrics.observe_request(request, response, elapsed)
    log.info("request", extra={"method": request.method, "path": request.path, "status": response.status_code,
                               "ms": round(elapsed * 1000, 3)})
    return response
