"""Celery task messages in orjson's JSON under their own content type (workers/wire/fastjson.py, issue 26)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from kombu.serialization import dumps, loads

from workers.stages.safety import judge
from workers.wire import fastjson


def test_a_task_body_round_trips_through_kombu_under_its_own_content_type():
    fastjson.register_message_serializer()
    chunk = [[0.1 * i + 1e-17 * j for j in range(7)] for i in range(50)]
    body = [[{"skip": None, "inference": {"actions": chunk, "units": ["m"] * 7, "waiter": True}}, {"n": 3}], {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    content_type, encoding, payload = dumps(body, serializer=fastjson.MESSAGE_SERIALIZER)
    assert (content_type, encoding) == (fastjson.MESSAGE_CONTENT_TYPE, "utf-8")
    back = loads(payload, content_type, encoding, accept=[fastjson.MESSAGE_CONTENT_TYPE])
    assert back == body  # floats exactly: the shortest repr that round-trips
    assert loads(payload, content_type, encoding, accept=[fastjson.MESSAGE_CONTENT_TYPE])[0][0]["inference"][
        "actions"][49][6] == chunk[49][6]


def test_a_type_json_cannot_carry_is_refused_at_the_publish():
    with pytest.raises(TypeError):
        fastjson.message_dumps({"job": object()})
    assert fastjson.message_dumps({"x": np.float32(0.5), "y": np.arange(2)}) == '{"x":0.5,"y":[0,1]}'


def test_a_non_finite_action_is_still_rejected_by_the_safety_stage(settings):
    """A model's NaN or infinity travels as null; the safety stage reads null back as NaN and fails the action
    on `finite_values`, as it did when kombu's json carried NaN itself."""
    actions = [[0.0] * 7 for _ in range(3)]
    actions[1][2] = math.nan
    actions[2][4] = math.inf
    received = fastjson.loads(fastjson.message_dumps(actions))
    assert received[1][2] is None and received[2][4] is None
    report = judge(received, robot_config={"type": "widowx_250"}, robot_state=None, options={"mode": "clamp"},
                   settings=settings)
    assert report["decision"] == "rejected" and report["actions"] is None
    assert "NON_FINITE" in report["flags"]
    direct = judge(actions, robot_config={"type": "widowx_250"}, robot_state=None, options={"mode": "clamp"},
                   settings=settings)
    assert (direct["decision"], direct["flags"]) == (report["decision"], report["flags"])
