"""Swagger UI's files from the pinned swagger-ui-bundle wheel, served under /docs/assets/ (no CDN: the docs
page loads no third-party script, and works offline)."""
from __future__ import annotations

from flask import Blueprint, Flask, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from web.errors import ApiError

bp = Blueprint("docs_assets", __name__)
_ALLOWED = frozenset({"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
                      "favicon-32x32.png", "favicon-16x16.png"})


@bp.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    if name not in _ALLOWED:
        raise ApiError(404, "not_found", "no such documentation asset")
    return send_from_directory(swagger_ui_path, name, max_age=86400)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
