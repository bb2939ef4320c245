"""The Flask application factory."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import sqlalchemy.exc
from flask import Flask, Response, g, request

from web import body_limits, cors, db, docs_assets, input_guard, metrics, timing
from web.auth import authenticate
from web.compat import openvla as openvla_compat
from web.errors import BACKEND_ERRORS, ApiError, from_api_error, from_backend_down, from_unexpected, from_unstorable
from web.extensions import Api
from web.json_provider import OrjsonProvider
from web.services import admission, dataset_probe
from workers import gc_freeze, logs
from workers.settings import DEV_PEPPER, Settings, get_settings

log = logging.getLogger("web.access")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(
        API_TITLE="VLA inference API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Swagger UI from the pinned swagger-ui-bundle wheel, served here (web/docs_assets.py): no CDN.
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,  # replay uploads; every other route less (web/body_limits.py)
    )
    app.config.update(config or {})
    app.config.setdefault("SETTINGS", get_settings())
    if not app.config.get("TESTING"):
        logs.configure(app.config["SETTINGS"].log_level)
        dataset_probe.warm()
    check_secrets(app.config["SETTINGS"])
    db.init_app(app)
    docs_assets.init_app(app)
    # One Api per app: flask-smorest keeps the OpenAPI spec on the Api object, so a shared one would
    # collect duplicate paths when tests build several apps.
    _register_blueprints(Api(app))
    app.register_error_handler(ApiError, from_api_error)
    for backend_error in BACKEND_ERRORS:
        app.register_error_handler(backend_error, from_backend_down)
    app.register_error_handler(sqlalchemy.exc.DataError, from_unstorable)
    app.register_error_handler(Exception, from_unexpected)
    app.before_request(_begin)
    app.after_request(_end)
    if not app.config.get("TESTING"):
        gc_freeze.freeze("web app created")  # a gunicorn worker, the openpi process: built, about to serve
    return app


def check_secrets(settings: Settings) -> None:
    """Refuse to serve with an empty API key pepper (every key check would fail) or, outside development
    mode (VLAAPI_ENV=development, which `make run` sets), with the public default one."""
    pepper = settings.api_key_pepper
    if not pepper.strip():
        raise RuntimeError("API_KEY_PEPPER is empty: set it to a long random secret, e.g. "
                           "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if pepper == DEV_PEPPER:
        if settings.environment != "development":
            raise RuntimeError("API_KEY_PEPPER is the public development default: set it to a long random secret "
                               "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), or run with "
                               "VLAAPI_ENV=development on a machine of your own")
        log.warning("API_KEY_PEPPER is the development default: set a secret before issuing real keys")


def _register_blueprints(api: Api) -> None:
    from web.api.inference.resources import blp as inference_blp
    from web.api.jobs.resources import blp as jobs_blp
    from web.api.models.resources import blp as models_blp
    from web.api.replays.resources import blp as replays_blp
    from web.api.system.resources import blp as system_blp
    from web.api.usage.resources import blp as usage_blp

    # OpenVLA's /act is documented too: its json-numpy body written as JSON Schema (web/compat/openvla_doc.py).
    for blp in (jobs_blp, inference_blp, models_blp, usage_blp, system_blp, replays_blp, openvla_compat.blp):
        api.register_blueprint(blp)
    # The multipart replay's `spec` part refers to it by name.
    from web.api.replays.schemas import ReplaySpecSchema

    api.spec.components.schema("ReplaySpec", schema=ReplaySpecSchema)


def _begin() -> Response | None:
    g.started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    # Only a printable ASCII id is echoed and stored: anything else gets one of ours.
    g.request_id = (incoming if 8 <= len(incoming) <= 64 and incoming.isascii() and incoming.isprintable()
                    else f"req_{uuid.uuid4().hex}")
    logs.bind(request_id=g.request_id, customer_id=None)
    preflight = cors.preflight()
    if preflight is not None:
        return preflight
    # Cheapest first, and nothing read before the key is checked: the route's body limit (413 from
    # Content-Length alone; the stream is capped for chunked bodies), then the key, then the guard. An
    # unmatched route is answered 404/405 without its body being read.
    body_limits.apply()
    keyed = request.path.startswith("/v1/") or request.endpoint in openvla_compat.ENDPOINTS
    if keyed:
        with timing.phase("auth"):
            authenticate()
    if request.routing_exception is None:
        input_guard.check_request(parse_body=keyed and request.path.startswith("/v1/"))
    return None


def _end(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    if "principal" in g and "extra_headers" not in g:
        g.extra_headers = admission.usage_headers(g.principal)
    for k, v in (g.get("extra_headers") or {}).items():
        response.headers.setdefault(k, v)
    cors.apply(response)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/v1/"):
        response.headers["Cache-Control"] = "no-store"  # per-customer answers: no shared cache may keep them
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    response.headers["Server-Timing"] = timing.header(elapsed)
    metrics.observe_request(request, response, elapsed)
    log.info("request", extra={"method": request.method, "path": request.path, "status": response.status_code,
                               "ms": round(elapsed * 1000, 3)})
    return response
