"""No 5xx from input: control characters, deep nesting, huge numbers and a full connection pool, on every
endpoint that takes them, are a 4xx (or 503) problem document, and nothing is written."""
from __future__ import annotations

import dataclasses
import io
import json
import threading

import pytest
from sqlalchemy import create_engine, func, select

from tests.helpers import request_body
from web.input_guard import MAX_DEPTH, MAX_SAFE_INT
from workers.store.models import Job

REPLAY = {"model": "openvla-tiny", "dataset": {"path": "some/dataset"}}


@pytest.fixture()
def headers(make_customer):
    return make_customer()[2]


def _problem(resp, statuses=(422,)):
    assert resp.status_code in statuses, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    return body


def _raw(body: dict, key: str, literal: str) -> str:
    """The JSON text of `body` with `key` set to a literal JSON fragment (for what json.dumps cannot write)."""
    text = json.dumps({**body, key: "@@"})
    return text.replace('"@@"', literal)


BODIES = {
    "nul in instruction": (lambda b: json.dumps({**b, "instruction": "pick\u0000up"}), "instruction"),
    "escape char in model": (lambda b: json.dumps({**b, "model": "openvla\u001b[2J"}), "model"),
    "DEL in a robot_config key": (
        lambda b: json.dumps({**b, "robot_config": {"type": "widowx_250", "x\u007f": 1}}), "robot_config.x\ufffd"),
    "nesting just past the limit": (lambda b: _raw(b, "robot_config", "[" * MAX_DEPTH + "]" * MAX_DEPTH),
                                    None),
    "nesting past the stack": (lambda b: _raw(b, "robot_config", "[" * 200_000 + "]" * 200_000), None),
    "integer past 2**53": (lambda b: _raw(b, "deadline_ms", str(MAX_SAFE_INT + 1)), "deadline_ms"),
    "integer of 5000 digits": (lambda b: _raw(b, "deadline_ms", "9" * 5000), None),
    "Infinity literal": (lambda b: _raw(b, "seed", "Infinity"), "seed"),
    "float overflowing to inf": (lambda b: _raw(b, "state", "[1e400]"), "state.0"),
}


def _jobs(db_session) -> int:
    return db_session.execute(select(func.count()).select_from(Job)).scalar_one()


@pytest.mark.parametrize("path,base", [("/v1/jobs", request_body), ("/v1/inference", request_body),
                                       ("/v1/replays", lambda: dict(REPLAY))])
@pytest.mark.parametrize("case", list(BODIES), ids=list(BODIES))
def test_hostile_json_bodies_are_4xx(client, headers, db_session, path, base, case):
    make, field = BODIES[case]
    before = _jobs(db_session)
    resp = client.post(path, data=make(base()), headers={**headers, "Content-Type": "application/json"})
    body = _problem(resp)
    if field:
        assert body["field"] == field
    assert _jobs(db_session) == before


def test_guard_allows_tab_and_newline_in_text(client, headers):
    resp = client.post("/v1/jobs", json=request_body(instruction="pick up\tthe block\nthen stop"), headers=headers)
    assert resp.status_code == 202, resp.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/v1/jobs?model=a%00b", "/v1/jobs?state=%01", "/v1/jobs?cursor=%00",
                                 "/v1/replays?state=%00", "/v1/jobs?x%00=1",
                                 "/v1/jobs/00000000-0000-0000-0000-000000000000/wait?timeout=%00",
                                 "/v1/replays/00000000-0000-0000-0000-000000000000/results?format=%00"])
def test_control_characters_in_query_strings(client, headers, url):
    _problem(client.get(url, headers=headers))


@pytest.mark.parametrize("url", ["/v1/jobs/%00", "/v1/replays/%00%01", "/v1/jobs/%00/wait"])
def test_control_characters_in_paths_are_404(client, headers, url):
    _problem(client.get(url, headers=headers), (404,))


def test_multipart_replay_spec_and_filename(client, headers):
    def post(spec: str, name: str = "d.npz"):
        return client.post("/v1/replays", data={"file": (io.BytesIO(b"x"), name), "spec": spec}, headers=headers,
                           content_type="multipart/form-data")

    nul = json.dumps({"model": "openvla-tiny", "instruction": "a\u0000"})
    assert _problem(post(nul))["field"] == "spec.instruction"
    _problem(post("[" * 100_000))
    _problem(post('{"model": "openvla-tiny", "episodes": [' + "9" * 5000 + "]}"))
    _problem(post("{not json"), (400,))
    assert _problem(post('{"model": "openvla-tiny"}', "d\u0001.npz"))["field"] == "file"


def test_request_id_with_control_characters_is_replaced(client, headers):
    resp = client.get("/v1/usage", headers={**headers, "X-Request-ID": "abcdefgh\u0000ij"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"].startswith("req_")


def test_405_names_the_allowed_methods(client, headers):
    resp = client.put("/v1/jobs", json={}, headers=headers)
    _problem(resp, (405,))
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_exhausted_connection_pool_is_503(settings, make_customer):
    """A pool with one connection, held by another thread: the request's wait for a connection times out."""
    from web.app import create_app
    from workers.store import db as store_db

    headers = make_customer()[2]
    url = settings.database_url + ("&" if "?" in settings.database_url else "?") + "application_name=pool_test"
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    store_db._engines[url] = engine  # the engine this URL gets: a real pool, just a small one
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, database_url=url)})
        resp = app.test_client().get("/v1/usage", headers=headers)
        assert _problem(resp, (503,))["type"].endswith("backend_unavailable")
        assert resp.headers["Retry-After"]
    finally:
        release.set()
        holder.join()
        store_db._engines.pop(url, None)
        engine.dispose()
