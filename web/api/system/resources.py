"""Operational endpoints: /health and /metrics (no API key: they are for load balancers and Prometheus)."""
from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from web import db, metrics
from web.extensions import Blueprint
from web.services import catalog, health
from workers.wire import notify

blp = Blueprint("system", __name__, description="Health and metrics")


def _check(fn) -> dict:
    try:
        fn()
        return {"ok": True}
    except Exception as exc:  # a health check reports failures, it never raises them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


@blp.route("/health")
class Health(MethodView):
    @blp.response(200)
    def get(self):
        """Database, Redis and every stage (GPU workers per model, safety, reaper): 200 when all are live, else 503."""
        settings = current_app.config["SETTINGS"]
        database = _check(lambda: db.session().execute(text("SELECT 1")))
        redis_ = _check(lambda: notify.client(settings.redis_url).ping())
        models, stages = {}, {}
        if redis_["ok"]:
            for name in catalog.enabled_models(settings):
                d = catalog.describe(settings, name)
                models[name] = {k: d[k] for k in ("ready", "workers", "ready_workers", "states", "errors")}
            stages = health.stages(settings)
        healthy = database["ok"] and redis_["ok"] and bool(stages) and health.all_live(stages)
        body = {"status": "ok" if healthy else "degraded", "database": database, "redis": redis_, "models": models,
                "stages": stages}
        return body, 200 if healthy else 503


@blp.route("/metrics")
class Metrics(MethodView):
    def get(self):
        """Prometheus text exposition."""
        return metrics.render(current_app.config["SETTINGS"])
