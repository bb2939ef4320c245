"""/v1/replays: replay recorded trajectories through a policy, follow progress, fetch results and a plot."""
from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

from flask import Response, current_app
from flask.views import MethodView
from sqlalchemy import select

from web import db
from web.api.replays.schemas import (
    ReplayListArgsSchema,
    ReplayPageSchema,
    ReplayRequestSchema,
    ReplaySchema,
    ResultsArgsSchema,
)
from web.auth import current, load_owned
from web.errors import ApiError
from web.extensions import Blueprint
from web.services import admission, replay_admission, replays
from web.services.replay_render import replay_json
from workers.replays import discard_upload
from workers.replays.export import MEDIA_TYPES, stream_rows
from workers.replays.plot import plot_replay
from workers.store import replays as store
from workers.store.db import session_factory
from workers.store.models import Replay

blp = Blueprint("replays", __name__, url_prefix="/v1/replays",
                description="Batch replays of recorded trajectories through a policy")


def load_replay(replay_id: str, *, lock: bool = False) -> Replay:
    return load_owned(Replay, replay_id, "replay", lock=lock)


@blp.route("")
class Replays(MethodView):
    @blp.doc(requestBody={"required": True, "content": {
        "application/json": {"schema": ReplayRequestSchema},
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file", "spec"], "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": ".zip/.tar(.gz) of a dataset directory, or .hdf5/.h5/.npz"},
                "spec": {"$ref": "#/components/schemas/ReplaySpec"}}},
            "encoding": {"spec": {"contentType": "application/json"}}}}})
    @blp.response(202, ReplaySchema)
    def post(self):
        """Submit a replay of a dataset under the server's root (JSON) or an uploaded one (multipart)."""
        with replay_admission.charged() as ticket:  # before the body is read: the rate, quota and slot
            data, upload = replays.parse()
            return admission.accepted(replay_json(replays.submit_replay(data, upload, ticket)))

    @blp.arguments(ReplayListArgsSchema, location="query")
    @blp.response(200, ReplayPageSchema)
    def get(self, args):
        """The caller's replays, newest first; `?state=` filters."""
        stmt = select(Replay).where(Replay.customer_id == uuid.UUID(current().customer_id))
        if args.get("state"):
            stmt = stmt.where(Replay.state == args["state"])
        stmt = stmt.order_by(Replay.created_at.desc(), Replay.id.desc()).limit(args["limit"])
        return {"items": [replay_json(r) for r in db.session().execute(stmt).scalars()]}


@blp.route("/<replay_id>")
class ReplayById(MethodView):
    @blp.response(200, ReplaySchema)
    def get(self, replay_id):
        """A replay's state and progress and, once it succeeded, its summary metrics."""
        return replay_json(load_replay(replay_id))

    @blp.response(200, ReplaySchema)
    def delete(self, replay_id):
        """Cancel a replay that has not finished (its worker stops within one window); finished answers 409."""
        replay = load_replay(replay_id, lock=True)
        if not store.cancel(db.session(), replay):
            raise ApiError(409, "already_finished", f"replay {replay_id} already ended {replay.state}")
        db.session().commit()
        admission.ended(replay, "canceled")
        discard_upload(current_app.config["SETTINGS"].replay_upload_dir, replay.dataset)
        return replay_json(replay)


@blp.route("/<replay_id>/results")
class ReplayResults(MethodView):
    @blp.arguments(ResultsArgsSchema, location="query")
    @blp.response(200, content_type="application/x-ndjson")
    @blp.doc(responses={"200": {"description": "the rows, in the requested format",
                                "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                            for t in MEDIA_TYPES.values()}}})
    def get(self, args, replay_id):
        """The per-step rows, ordered by (episode, step), as JSON lines, CSV or Parquet (streamed)."""
        replay = load_replay(replay_id)
        fmt = args["format"]
        url = current_app.config["SETTINGS"].database_url
        headers = {"Content-Disposition": f'attachment; filename="replay-{replay.id}.{fmt}"'}
        return Response(_stream(url, str(replay.id), fmt), mimetype=MEDIA_TYPES[fmt], headers=headers)


@blp.route("/<replay_id>/plot.png")
class ReplayPlot(MethodView):
    @blp.response(200, content_type="image/png")
    def get(self, replay_id):
        """A PNG: predicted against recorded actions per dimension, safety interventions shaded."""
        replay = load_replay(replay_id)
        buf = io.BytesIO()
        plot_replay(store.iter_rows(db.session(), str(replay.id)), buf,
                    title=f"Replay {replay.id} ({replay.model}, {replay.state})")
        return Response(buf.getvalue(), mimetype="image/png")


def _stream(url: str, replay_id: str, fmt: str) -> Iterator[bytes]:
    # Its own session: the request's is closed at teardown, before a streamed body is finished.
    with session_factory(url)() as s:
        yield from stream_rows(store.iter_rows(s, replay_id), fmt)
