"""Request and response schemas for jobs and the synchronous inference endpoint."""
from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from web.api.schemas import BASE64, NON_BLANK, ImageField, JsonBoolean, JsonFloat, JsonInteger, StrictSchema

SAFETY_MODES = ("reject", "clamp", "monitor")


class RobotStateSchema(StrictSchema):
    ee_position = fields.List(JsonFloat(allow_nan=False), required=True, validate=validate.Length(equal=3),
                              metadata={"description": "end-effector position, metres, robot base frame"})
    ee_orientation = fields.List(JsonFloat(allow_nan=False), validate=validate.Length(equal=3),
                                 metadata={"description": "roll, pitch, yaw in radians"})
    gripper = JsonFloat(allow_nan=False)


class SafetyOptionsSchema(StrictSchema):
    mode = fields.String(validate=validate.OneOf(SAFETY_MODES))
    enable_classifier = JsonBoolean()
    safety_threshold = JsonFloat(validate=validate.Range(min=0.0, max=1.0))


RTC_SCHEDULES = ("linear", "exp", "ones", "zeros")  # workers/policies/flow_sampling.py (a test keeps them equal)
RTC_JACOBIANS = ("vjp", "identity")


class RealTimeChunkingSchema(StrictSchema):
    """Real-time chunking (Black, Galliker, Levine, NeurIPS 2025) for flow policies (pi0): the new chunk is
    sampled as an inpainting of the actions the robot will still execute, so it continues them."""

    prev_actions = fields.List(
        fields.List(JsonFloat(allow_nan=False), validate=validate.Length(min=1, max=64)), required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "the previous chunk's actions the robot has not executed yet, the next one to "
                                 "execute first, in robot units as the service returned them: n rows of the "
                                 "model's action_dim values, 1 <= n <= chunk_length"})
    inference_delay = JsonInteger(required=True, validate=validate.Range(min=0, max=1000), metadata={
        "description": "control steps the robot executes while this request runs (latency / control period); the new "
                       "chunk's first inference_delay actions are held to prev_actions (at most chunk_length)"})
    execution_horizon = JsonInteger(validate=validate.Range(min=1, max=1000), metadata={
        "description": "steps over which guidance fades out (default 10, cut to len(prev_actions) and chunk_length)"})
    max_guidance_weight = JsonFloat(allow_nan=False, validate=validate.Range(min=0.0, max=1000.0, min_inclusive=False),
                                    metadata={"description": "clip of the guidance weight (default 10)"})
    prefix_attention_schedule = fields.String(validate=validate.OneOf(RTC_SCHEDULES), metadata={
        "description": "soft mask between inference_delay and execution_horizon (default linear), as LeRobot's"})
    jacobian = fields.String(validate=validate.OneOf(RTC_JACOBIANS), metadata={
        "description": "vjp (default): the paper's guidance, a vector-Jacobian product through the velocity field; "
                       "identity: LeRobot 0.6.1's (no backward pass, cheaper)"})

    @validates_schema
    def _rectangular(self, data, **_):
        widths = {len(row) for row in data.get("prev_actions") or []}
        if len(widths) > 1:
            raise ValidationError("every action in prev_actions must have the same length", field_name="prev_actions")


# A request the tiny development models accept: Swagger UI's "Try it out" and schemathesis's examples phase
# start from it (and, through the submission's links, read, wait on and cancel the job it makes).
EXAMPLE_REQUEST = {
    "model": "openvla-tiny", "instruction": "pick up the red block", "unnorm_key": "bridge_orig",
    "image": "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGUlEQVR4nGOssJFjIAUwkaR6VMOohiGlAQC2BADyLZTzIAAAAABJ"
             "RU5ErkJggg==",
    "robot_state": {"ee_position": [0.3, 0.0, 0.15]}, "safety": {"mode": "clamp"},
}


class InferenceRequestSchema(StrictSchema):
    OPENAPI_EXTRA = {"oneOf": [{"required": ["image"]}, {"required": ["images"]}], "example": EXAMPLE_REQUEST}

    model = fields.String(required=True, validate=validate.Length(min=1, max=100))
    image = ImageField(validate=validate.Length(min=1),
                       metadata={"description": "base64 PNG/JPEG of the primary camera", "pattern": BASE64})
    images = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                         values=ImageField(validate=validate.Length(min=1), metadata={"pattern": BASE64}),
                         validate=validate.Length(min=1, max=8),
                         metadata={"description": "base64 images keyed by camera name, for multi-camera models"})
    instruction = fields.String(required=True, validate=validate.Length(min=1, max=2000),
                                metadata={"pattern": NON_BLANK})
    state = fields.List(JsonFloat(allow_nan=False), validate=validate.Length(min=1, max=64),
                        metadata={"description": "proprioceptive state, for models that take it (pi0)"})
    unnorm_key = fields.String(validate=validate.Length(min=1, max=200))
    seed = JsonInteger(validate=validate.Range(min=0, max=2**31 - 1))
    robot_config = fields.Dict(metadata={"description": "robot type, workspace_bounds, velocity_limits, ..."})
    robot_state = fields.Nested(RobotStateSchema)
    safety = fields.Nested(SafetyOptionsSchema)
    deadline_ms = JsonInteger(validate=validate.Range(min=1),
                                 metadata={"description": "the job expires if not finished this many ms after submit"})
    rtc = fields.Nested(RealTimeChunkingSchema, metadata={
        "description": "real-time chunking, for flow policies (models listed with real_time_chunking: true)"})

    @validates_schema
    def _one_image_field(self, data, **_):
        if ("image" in data) == ("images" in data):
            raise ValidationError("give exactly one of 'image' or 'images'", field_name="image")
        if not data["instruction"].strip():
            raise ValidationError("instruction must not be blank", field_name="instruction")


class JobListArgsSchema(StrictSchema):
    state = fields.String(validate=validate.OneOf(("queued", "running", "succeeded", "failed", "expired", "canceled")))
    model = fields.String()
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))
    cursor = fields.String(metadata={"description": "opaque cursor from the previous page's next_cursor"})


class WaitArgsSchema(StrictSchema):
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.0, max=60.0))


class JobSchema(StrictSchema):
    id = fields.String()
    state = fields.String()
    model = fields.String()
    kind = fields.String()
    request_id = fields.String()
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    deadline_at = fields.String()
    attempts = fields.Integer()
    request = fields.Dict()
    result = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)
    performance = fields.Dict()
    links = fields.Dict()
    usage = fields.Dict(metadata={"description": "the caller's usage after this request (on submission)"})


class JobPageSchema(StrictSchema):
    items = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)
