"""/v1/jobs: submit, list, read, wait on and cancel inference jobs."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime

from flask.views import MethodView
from sqlalchemy import and_, or_, select

from web import db, msgpack_body
from web.api.jobs import msgpack_doc
from web.api.jobs.schemas import InferenceRequestSchema, JobListArgsSchema, JobPageSchema, JobSchema, WaitArgsSchema
from web.auth import current, load_owned
from web.errors import ApiError
from web.extensions import Blueprint
from web.services import admission, idempotency, render, submit
from web.services.waiting import wait_for
from workers.store import jobs as jobstore
from workers.store.models import Job

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Inference jobs: submit, then poll or wait")


def submit_idempotent(data: dict, kind: str = "interactive") -> Job:
    return idempotency.submit_once(
        Job, lambda: submit.request_hash(data),
        lambda key, req_hash: admission.submit_job(data, kind, idempotency_key=key, req_hash=req_hash))


def load_job(job_id: str, *, lock: bool = False) -> Job:
    return load_owned(Job, job_id, "job", lock=lock)


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(InferenceRequestSchema, location=msgpack_body.LOCATION)  # JSON, or msgpack with raw arrays
    @blp.doc(requestBody=msgpack_doc.REQUEST_BODY)
    @blp.response(202, JobSchema)
    def post(self, data):
        """Submit an inference job; answers 202 with its id and a Location header."""
        return admission.accepted(render.job_json(submit_idempotent(data)))

    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobPageSchema)
    def get(self, args):
        """The caller's jobs, newest first, paginated by cursor, filterable by state and model."""
        stmt = select(Job).where(Job.customer_id == uuid.UUID(current().customer_id))
        if args.get("state"):
            stmt = stmt.where(Job.state == args["state"])
        if args.get("model"):
            stmt = stmt.where(Job.model == args["model"])
        if args.get("cursor"):
            created, jid = _decode_cursor(args["cursor"])
            stmt = stmt.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < jid)))
        rows = db.session().execute(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(args["limit"] + 1))
        jobs = list(rows.scalars())
        more = len(jobs) > args["limit"]
        jobs = jobs[: args["limit"]]
        cursor = _encode_cursor(jobs[-1]) if more else None
        return {"items": [render.job_json(j) for j in jobs], "next_cursor": cursor}


@blp.route("/<job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    def get(self, job_id):
        """A job's state and, once finished, its full result."""
        return render.job_json(load_job(job_id))

    @blp.response(200, JobSchema)
    def delete(self, job_id):
        """Cancel a job that has not finished; a finished job answers 409."""
        job = load_job(job_id, lock=True)
        if not jobstore.cancel(db.session(), job):
            raise ApiError(409, "already_finished", f"job {job_id} already ended {job.state}")
        db.session().commit()
        admission.ended(job, "canceled")
        return render.job_json(job)


@blp.route("/<job_id>/wait")
class JobWait(MethodView):
    @blp.arguments(WaitArgsSchema, location="query")
    @blp.response(200, JobSchema)
    def get(self, args, job_id):
        """Block until the job finishes or `timeout` seconds pass (at most 60), then return it as it stands."""
        job = load_job(job_id)
        return render.job_json(wait_for(job, args["timeout"]))


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, jid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(jid)
    except ValueError:
        raise ApiError(422, "invalid_cursor", "cursor is not one this API issued", field="cursor") from None

