"""/v1/models/list: the enabled models, their action spaces and how many workers serve each."""
from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from web.extensions import Blueprint
from web.services import catalog

blp = Blueprint("models", __name__, url_prefix="/v1/models", description="Models served here")


@blp.route("/list")
class ModelList(MethodView):
    @blp.response(200)
    def get(self):
        """Enabled models with action space, chunk length, unnorm keys, and worker readiness."""
        settings = current_app.config["SETTINGS"]
        out = []
        for name in catalog.enabled_models(settings):
            d = catalog.describe(settings, name)
            spec = d.pop("spec") or {}
            out.append({
                **d,
                "family": spec.get("family"),
                "action_space": {"type": spec.get("action_type"), "dimensions": spec.get("action_dim"),
                                 "units": spec.get("units")} if spec else None,
                "chunk_length": spec.get("chunk_length"),
                "real_time_chunking": bool(spec.get("real_time_chunking")),
                "cameras": spec.get("cameras"),
                "state_dim": spec.get("state_dim"),
                "unnorm_keys": spec.get("unnorm_keys"),
                "default_unnorm_key": spec.get("default_unnorm_key"),
                "dtype": spec.get("dtype"),
                "device": spec.get("device"),
                "request_options": spec.get("request_options"),
            })
        return {"models": out}
