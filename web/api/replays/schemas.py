"""Request and response schemas for /v1/replays."""
from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from web.api.jobs.schemas import SAFETY_MODES
from web.api.schemas import NON_BLANK, JsonInteger, StrictSchema

EXPORT_FORMATS = ("jsonl", "csv", "parquet")
STATE_SOURCES = ("none", "dataset")


class DatasetRefSchema(StrictSchema):
    path = fields.String(required=True, validate=validate.Length(min=1, max=1000),
                         metadata={"description": "a dataset under the server's replay data root"})


class ReplaySafetySchema(StrictSchema):
    mode = fields.String(validate=validate.OneOf(SAFETY_MODES))


class ReplaySpecSchema(StrictSchema):
    """What a replay runs with; the multipart form's `spec` field (the dataset is the uploaded file)."""

    model = fields.String(required=True, validate=validate.Length(min=1, max=100))
    episodes = fields.List(JsonInteger(validate=validate.Range(min=0)), validate=validate.Length(min=1, max=100_000),
                           metadata={"description": "episode indices to replay (default: all)"})
    step_range = fields.List(JsonInteger(validate=validate.Range(min=0)), validate=validate.Length(min=1, max=2),
                             metadata={"description": "[start, stop) within each episode, or [start] to its end"})
    instruction = fields.String(validate=validate.Length(min=1, max=2000),
                                metadata={"description": "overrides the recorded instruction", "pattern": NON_BLANK})
    robot_config = fields.Dict(metadata={"description": "robot type etc. for the safety stage (none: the dataset's "
                                                     "own robot, else SAFETY_DEFAULT_ROBOT, in monitor mode)"})
    robot_state_source = fields.String(load_default="none", validate=validate.OneOf(STATE_SOURCES),
                                       metadata={"description": "'dataset': state[:3] is ee_position, [3:6] "
                                                                "ee_orientation"})
    unnorm_key = fields.String(validate=validate.Length(min=1, max=200),
                               metadata={"description": "dataset statistics to un-normalise with (OpenVLA)"})
    safety = fields.Nested(ReplaySafetySchema)
    camera_map = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=200)),
                             values=fields.String(validate=validate.Length(min=1, max=200)),
                             validate=validate.Length(min=1, max=16),
                             metadata={"description": "dataset camera -> policy camera (default: in order)"})

    @validates_schema
    def _checks(self, data, **_):
        if "instruction" in data and not data["instruction"].strip():
            raise ValidationError("instruction must not be blank", field_name="instruction")
        rng = data.get("step_range")
        if rng and len(rng) == 2 and rng[1] <= rng[0]:
            raise ValidationError("expected [start, stop) with start < stop", field_name="step_range")

    @post_load
    def _open_range(self, data, **_):
        """[start] is [start, None] from here on: the stored form the replay driver reads."""
        if data.get("step_range") and len(data["step_range"]) == 1:
            data["step_range"] = [data["step_range"][0], None]
        return data


class ReplayRequestSchema(ReplaySpecSchema):
    dataset = fields.Nested(DatasetRefSchema, required=True)


class ReplayListArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))
    state = fields.String(validate=validate.OneOf(("queued", "running", "succeeded", "failed", "canceled")))


class ResultsArgsSchema(StrictSchema):
    format = fields.String(load_default="jsonl", validate=validate.OneOf(EXPORT_FORMATS))


class ProgressSchema(StrictSchema):
    done_steps = fields.Integer()
    total_steps = fields.Integer()
    fraction = fields.Float()
    steps_per_second = fields.Float(allow_none=True)
    eta_seconds = fields.Float(allow_none=True)


class ReplaySchema(StrictSchema):
    id = fields.String()
    state = fields.String()
    model = fields.String()
    request_id = fields.String()
    dataset = fields.Dict()
    options = fields.Dict()
    progress = fields.Nested(ProgressSchema)
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    summary = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)
    links = fields.Dict()
    usage = fields.Dict(metadata={"description": "the caller's usage after this request (on submission)"})


class ReplayPageSchema(StrictSchema):
    items = fields.List(fields.Nested(ReplaySchema))
