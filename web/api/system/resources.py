"""Operational endpoints: /health and /metrics (no API key: they are for load balancers and Prometheus).

The public /health answers status booleans only; its details (per-model worker counts and states, and what
failed) go to an operator presenting OPS_TOKEN, since exception text names hosts and users.
"""
from __future__ import annotations

import hmac
import logging

from flask import current_app, request
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from web import db, metrics
from web.extensions import Blueprint
from web.services import catalog, health
from workers.wire import notify

blp = Blueprint("system", __name__, description="Health and metrics")
log = logging.getLogger(__name__)
OPS_HEADER = "X-Ops-Token"


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "degraded"]})
    database = fields.Boolean()
    redis = fields.Boolean()
    models = fields.Dict(keys=fields.String(), values=fields.Boolean(),
                         metadata={"description": "enabled model -> at least one ready worker"})
    stages = fields.Dict(keys=fields.String(), values=fields.Boolean(),
                         metadata={"description": "model:<name>, safety, reaper -> at least one live worker"})
    details = fields.Dict(metadata={"description": "only for the operator token: workers, states and errors"})


def _check(name: str, fn) -> dict:
    try:
        fn()
        return {"ok": True}
    except Exception as exc:  # a health check reports failures, it never raises them
        log.warning("health: %s unreachable: %s", name, type(exc).__name__)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _is_operator() -> bool:
    token = current_app.config["SETTINGS"].ops_token
    given = request.headers.get(OPS_HEADER, "")
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="Something cannot serve")
    @blp.doc(parameters=[{"in": "header", "name": OPS_HEADER, "required": False, "schema": {"type": "string"},
                          "description": "the operator token (OPS_TOKEN): adds per-model and error details"}])
    def get(self):
        """Database, Redis and every stage (GPU workers per model, safety, reaper): 200 when all are live, else 503."""
        settings = current_app.config["SETTINGS"]
        database = _check("database", lambda: db.session().execute(text("SELECT 1")))
        redis_ = _check("redis", lambda: notify.client(settings.redis_url).ping())
        models, stages = {}, {}
        if redis_["ok"]:
            for name in catalog.enabled_models(settings):
                d = catalog.describe(settings, name)
                models[name] = {k: d[k] for k in ("ready", "workers", "ready_workers", "states", "errors")}
            stages = health.stages(settings)
        healthy = database["ok"] and redis_["ok"] and bool(stages) and health.all_live(stages)
        body = {"status": "ok" if healthy else "degraded", "database": database["ok"], "redis": redis_["ok"],
                "models": {name: m["ready"] for name, m in models.items()},
                "stages": {name: st["live"] for name, st in stages.items()}}
        if _is_operator():
            body["details"] = {"database": database, "redis": redis_, "models": models, "stages": stages}
        return body, 200 if healthy else 503


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.response(200, content_type="text/plain", description="Prometheus text exposition format 0.0.4")
    def get(self):
        """Prometheus text exposition."""
        return metrics.render(current_app.config["SETTINGS"])
