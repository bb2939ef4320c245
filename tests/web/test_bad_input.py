"""Every bad input is a 4xx problem document naming the field, with the request id; nothing is written."""
from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from tests.helpers import png_b64, request_body
from workers.store.models import Job


@pytest.fixture()
def headers(make_customer):
    return make_customer()[2]


def _jobs(db_session) -> int:
    return db_session.execute(select(func.count()).select_from(Job)).scalar_one()


def _assert_problem(resp, status, field=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    assert body["request_id"] == resp.headers["X-Request-ID"]
    if field:
        named = {str(f).split(".")[0] for f in [*(body.get("errors") or {}), body.get("field")]}
        assert field in named, body
    return body


CASES = [
    ("missing model", lambda b: b.pop("model"), 422, "model"),
    ("missing instruction", lambda b: b.pop("instruction"), 422, "instruction"),
    ("blank instruction", lambda b: b.update(instruction="   "), 422, "instruction"),
    ("instruction wrong type", lambda b: b.update(instruction=42), 422, "instruction"),
    ("unknown field", lambda b: b.update(colour="red"), 422, "colour"),
    ("no image", lambda b: b.pop("image"), 422, "image"),
    ("both image fields", lambda b: b.update(images={"primary": png_b64()}), 422, "image"),
    ("bad base64", lambda b: b.update(image="%%%not-base64%%%"), 422, "image"),
    ("bytes that are no image", lambda b: b.update(image=base64.b64encode(b"hello world" * 10).decode()), 422,
     "image"),
    ("truncated png", lambda b: b.update(image=base64.b64encode(base64.b64decode(png_b64())[:60]).decode()), 422,
     "image"),
    ("unknown model", lambda b: b.update(model="openvla-tinny"), 422, "model"),
    ("bad safety mode", lambda b: b.update(safety={"mode": "yolo"}), 422, "safety"),
    ("threshold out of range", lambda b: b.update(safety={"safety_threshold": 3}), 422, "safety"),
    ("robot state wrong length", lambda b: b.update(robot_state={"ee_position": [0, 0]}), 422, "robot_state"),
    ("NaN in state", lambda b: b.update(state=[float("nan")] * 8), 422, "state"),
    ("negative deadline", lambda b: b.update(deadline_ms=-5), 422, "deadline_ms"),
    ("unknown robot type", lambda b: b.update(robot_config={"type": "franka_pandaa"}), 422, None),
    ("inverted workspace", lambda b: b.update(robot_config={"type": "widowx_250", "workspace_bounds": {
        "min": [0.5, 0, 0], "max": [0.1, 0.2, 0.3]}}), 422, None),
]


@pytest.mark.parametrize("name,mutate,status,field", CASES, ids=[c[0] for c in CASES])
def test_bad_body_is_problem_and_writes_nothing(client, headers, db_session, name, mutate, status, field):
    before = _jobs(db_session)
    body = request_body()
    mutate(body)
    _assert_problem(client.post("/v1/jobs", json=body, headers=headers), status, field)
    assert _jobs(db_session) == before


def test_invalid_json(client, headers):
    resp = client.post("/v1/jobs", data="{not json", headers={**headers, "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500
    _assert_problem(resp, resp.status_code)


def test_image_over_size_limit(client, headers, app, settings, db_session):
    before = _jobs(db_session)
    big = base64.b64encode(b"\x89PNG" + b"\0" * (settings.max_image_bytes + 10)).decode()
    _assert_problem(client.post("/v1/jobs", json=request_body(image=big), headers=headers), 413, "image")
    assert _jobs(db_session) == before


def test_unknown_model_suggests_close_name(client, headers):
    body = _assert_problem(client.post("/v1/jobs", json=request_body(model="openvla-tinny"), headers=headers), 422)
    assert "openvla-tiny" in body["detail"]


def test_unknown_job_is_404_problem(client, headers):
    _assert_problem(client.get("/v1/jobs/not-a-uuid", headers=headers), 404)
    _assert_problem(client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=headers), 404)


def test_wait_timeout_out_of_range(client, headers):
    _assert_problem(client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/wait?timeout=600",
                               headers=headers), 422, "timeout")


def test_unknown_route_and_method(client, headers):
    _assert_problem(client.get("/v1/nothing-here", headers=headers), 404)
    _assert_problem(client.put("/v1/jobs", json={}, headers=headers), 405)


def test_unreachable_database_is_503_not_500(settings, make_customer):
    import dataclasses

    from web.app import create_app

    headers = make_customer()[2]
    down = dataclasses.replace(settings, database_url="postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    with create_app({"TESTING": True, "SETTINGS": down}).test_client() as c:
        resp = c.get("/v1/usage", headers=headers)
    body = _assert_problem(resp, 503)
    assert body["type"].endswith("backend_unavailable") and resp.headers["Retry-After"]


def test_unreachable_redis_is_503_not_500(settings, make_customer):
    import dataclasses

    from web.app import create_app

    headers = make_customer()[2]
    down = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
    with create_app({"TESTING": True, "SETTINGS": down}).test_client() as c:
        resp = c.post("/v1/jobs", json=request_body(), headers=headers)
    _assert_problem(resp, 503)
