"""GET /v1/usage: this minute's, today's and this month's counts, and what remains."""
from __future__ import annotations

from flask.views import MethodView

from web.extensions import Blueprint
from web.services import admission

blp = Blueprint("usage", __name__, url_prefix="/v1", description="The caller's usage and limits")


@blp.route("/usage")
class Usage(MethodView):
    @blp.response(200)
    def get(self):
        """Current usage counts and remaining allowance for the caller's tier."""
        return admission.usage_now()
