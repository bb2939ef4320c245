"""POST /v1/inference: submit and wait, answering in the specification's response shape."""
from __future__ import annotations

from flask.views import MethodView

from web import msgpack_body
from web.api.jobs import msgpack_doc
from web.api.jobs.schemas import InferenceRequestSchema, JobSchema
from web.extensions import Blueprint
from web.services import admission, inference, render

blp = Blueprint("inference", __name__, url_prefix="/v1", description="Synchronous inference for control loops")


@blp.route("/inference")
class Inference(MethodView):
    @blp.arguments(InferenceRequestSchema, location=msgpack_body.LOCATION)  # JSON, or msgpack with raw arrays
    @blp.doc(requestBody=msgpack_doc.REQUEST_BODY)
    @blp.response(200)
    @blp.alt_response(202, schema=JobSchema, description="The wait ran out first: the job, to poll or wait on")
    @blp.alt_response(504, response="DEFAULT_ERROR", description="The deadline passed before an action was ready")
    @blp.alt_response(503, response="DEFAULT_ERROR", description="A backend is unavailable (Retry-After); if the job "
                      "was already accepted (type accepted_wait_failed), its job_id and a Location header to fetch it; "
                      "type deadline_unattainable, at once: the backlog cannot meet this deadline (Retry-After, "
                      "retry_after_ms, expected_ms)")
    def post(self, data):
        """Run one inference and wait for its safety-checked action (202 with the job if the wait runs out).

        An Idempotency-Key header makes a retry return the first request's job (waited for if still running)."""
        job = inference.submit_and_wait(data)
        if job.state == "succeeded":
            return render.inference_json(job, admission.usage_block())
        if job.state in ("queued", "running"):
            return render.job_json(job), 202, {"Location": render.job_json(job)["links"]["self"]}
        inference.raise_for_failure(job)
