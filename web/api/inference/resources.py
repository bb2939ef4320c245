"""POST /v1/inference: submit and wait, answering in the specification's response shape."""
from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView

from web.api.jobs.schemas import InferenceRequestSchema
from web.errors import ApiError
from web.extensions import Blueprint
from web.services import admission, render
from web.services.public_errors import public_error
from web.services.waiting import wait_for

blp = Blueprint("inference", __name__, url_prefix="/v1", description="Synchronous inference for control loops")

_FAILURES = {
    "invalid_input": (422, "the model could not use this input"),
    "deadline_exceeded": (504, "the deadline passed before an action was ready; no action is returned"),
    "model_unavailable": (503, "the model's worker cannot serve it"),
}


@blp.route("/inference")
class Inference(MethodView):
    @blp.arguments(InferenceRequestSchema)
    @blp.response(200)
    def post(self, data):
        """Run one inference and wait for its safety-checked action (202 with the job if the wait runs out)."""
        job = admission.submit_job(data)
        settings = current_app.config["SETTINGS"]
        job = wait_for(job, settings.wait_max_s)
        if job.state == "succeeded":
            return render.inference_json(job, g.get("usage"))
        if job.state in ("queued", "running"):
            return render.job_json(job), 202, {"Location": render.job_json(job)["links"]["self"]}
        error = public_error(job.error) or {"code": job.state, "detail": f"the job ended {job.state}"}
        status, title = _FAILURES.get(error["code"], (502, "the job did not complete"))
        raise ApiError(status, error["code"], f"{title}: {error['detail']}", field=error.get("field"),
                       job_id=str(job.id), state=job.state)
