"""The `rtc` request field (real-time chunking): shapes checked by the schema, then against the model's own
description once a worker has reported it; every bad input a 422 problem document naming the field, nothing
written. The policy-level refusal (a worker whose spec the web has not seen) is in
tests/workers/policies/test_flow_sampling.py."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.helpers import request_body
from web.api.jobs.schemas import RTC_JACOBIANS, RTC_SCHEDULES
from web.services import catalog
from workers.policies import flow_sampling
from workers.policies.base import PolicySpec
from workers.store.models import Job
from workers.wire import notify

PREV = [[0.0] * 7] * 5
SPECS = {  # what the workers of these models report (workers/policies/*: PolicySpec.to_dict)
    "openvla-tiny": PolicySpec(name="openvla-tiny", family="openvla", action_dim=7, chunk_length=1,
                               cameras=["primary"], unnorm_keys=["bridge_orig"], default_unnorm_key="bridge_orig",
                               action_type="ee_delta", units=["m"] * 7, state_dim=None, dtype="float32",
                               device="cpu"),
    "pi0-tiny": PolicySpec(name="pi0-tiny", family="pi0", action_dim=7, chunk_length=50, cameras=["base_0_rgb"],
                           unnorm_keys=[], default_unnorm_key=None, action_type="ee_delta", units=["m"] * 7,
                           state_dim=8, dtype="float32", device="cpu", real_time_chunking=True),
}


@pytest.fixture()
def headers(make_customer):
    return make_customer()[2]


@pytest.fixture()
def reported(settings, redis_client):
    """Both models' specs in Redis as a ready worker's heartbeat; removed afterwards."""
    host = "test-rtc-fields"
    for name, spec in SPECS.items():
        notify.publish_heartbeat(redis_client, name, host, {"state": "ready", "spec": spec.to_dict()}, ttl_s=60)
    catalog._beats._entries.clear()  # noqa: SLF001 - the 1 s heartbeat cache
    yield
    for name in SPECS:
        redis_client.hdel(notify.heartbeat_key(name), host)
    catalog._beats._entries.clear()  # noqa: SLF001


def _jobs(db_session) -> int:
    return db_session.execute(select(func.count()).select_from(Job)).scalar_one()


def _refused(client, headers, db_session, body, field, code=None):
    before = _jobs(db_session)
    resp = client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    doc = resp.get_json()
    named = {str(f) for f in [*(doc.get("errors") or {}), doc.get("field")]}
    assert any(n == field or n.startswith(field.split(".")[0]) for n in named), doc
    if code:
        assert doc["type"].endswith(code), doc
    assert _jobs(db_session) == before
    return doc


SHAPES = [
    ("not an object", [1, 2]),
    ("prev_actions missing", {"inference_delay": 2}),
    ("inference_delay missing", {"prev_actions": PREV}),
    ("empty prev_actions", {"prev_actions": [], "inference_delay": 0}),
    ("a row that is no list", {"prev_actions": [1.0, 2.0], "inference_delay": 0}),
    ("ragged rows", {"prev_actions": [[0.0] * 7, [0.0] * 6], "inference_delay": 1}),
    ("NaN", {"prev_actions": [[float("nan")] * 7], "inference_delay": 1}),
    ("a string number", {"prev_actions": [["0.1"] * 7], "inference_delay": 1}),
    ("negative delay", {"prev_actions": PREV, "inference_delay": -1}),
    ("fractional delay", {"prev_actions": PREV, "inference_delay": 1.5}),
    ("zero horizon", {"prev_actions": PREV, "inference_delay": 1, "execution_horizon": 0}),
    ("zero guidance weight", {"prev_actions": PREV, "inference_delay": 1, "max_guidance_weight": 0}),
    ("unknown schedule", {"prev_actions": PREV, "inference_delay": 1, "prefix_attention_schedule": "cosine"}),
    ("unknown jacobian", {"prev_actions": PREV, "inference_delay": 1, "jacobian": "exact"}),
    ("unknown field", {"prev_actions": PREV, "inference_delay": 1, "delay": 1}),
]


@pytest.mark.parametrize("name,rtc", SHAPES, ids=[s[0] for s in SHAPES])
def test_bad_shapes_are_422_naming_rtc(client, headers, db_session, name, rtc):
    _refused(client, headers, db_session, request_body("pi0-tiny", rtc=rtc, state=[0.0] * 8), "rtc")


def test_a_model_that_is_not_a_flow_policy_refuses_rtc(client, headers, db_session, reported):
    doc = _refused(client, headers, db_session, request_body(rtc={"prev_actions": PREV, "inference_delay": 1},
                                                             unnorm_key="bridge_orig"), "rtc", "rtc_unsupported")
    assert "flow polic" in doc["detail"]


SPEC_CASES = [
    ("wrong width", {"prev_actions": [[0.0] * 6] * 3, "inference_delay": 1}, "rtc.prev_actions"),
    ("more than a chunk", {"prev_actions": [[0.0] * 7] * 51, "inference_delay": 1}, "rtc.prev_actions"),
    ("delay past the chunk", {"prev_actions": PREV, "inference_delay": 51}, "rtc.inference_delay"),
    ("horizon past the chunk", {"prev_actions": PREV, "inference_delay": 1, "execution_horizon": 51},
     "rtc.execution_horizon"),
]


@pytest.mark.parametrize("name,rtc,field", SPEC_CASES, ids=[s[0] for s in SPEC_CASES])
def test_checked_against_the_models_spec(client, headers, db_session, reported, name, rtc, field):
    doc = _refused(client, headers, db_session, request_body("pi0-tiny", rtc=rtc, state=[0.0] * 8), field,
                   "invalid_rtc")
    assert doc["field"] == field


def test_models_list_says_which_models_take_it(client, headers, reported):
    models = {m["name"]: m for m in client.get("/v1/models/list", headers=headers).get_json()["models"]}
    assert models["pi0-tiny"]["real_time_chunking"] is True
    assert models["openvla-tiny"]["real_time_chunking"] is False


def test_openapi_documents_the_field_and_the_policy_agrees_on_the_enums(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    rtc = schemas["RealTimeChunking"]
    assert set(rtc["required"]) == {"prev_actions", "inference_delay"}
    assert rtc["properties"]["prefix_attention_schedule"]["enum"] == list(RTC_SCHEDULES)
    assert "rtc" in schemas["InferenceRequest"]["properties"]
    assert set(RTC_SCHEDULES) == set(flow_sampling.SCHEDULES) and set(RTC_JACOBIANS) == set(flow_sampling.JACOBIANS)
    assert flow_sampling.DEFAULT_SCHEDULE == RTC_SCHEDULES[0] and flow_sampling.DEFAULT_JACOBIAN == RTC_JACOBIANS[0]
