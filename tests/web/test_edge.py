"""The HTTP edge (issue 21): nothing unpaid is parsed, every route reads at most its own body limit, /act in
every body form meets the same input rules as POST /v1/inference, and a customer over its limit gets 429 on
the compatibility doors before any image is converted."""
from __future__ import annotations

import base64
import io
import json
import time

import json_numpy
import numpy as np
import pytest

from tests.helpers import request_body
from web import body_limits, input_guard

HOSTILE = b"[" + b"{}," * 1_000_000 + b"{}]"  # 3 MB of empty objects: a million values to allocate
IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


class CountingStream(io.BytesIO):
    """The request's WSGI input, recording how many bytes anything read from it."""

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.consumed = getattr(self, "consumed", 0) + len(out)
        return out

    def readline(self, size: int | None = -1) -> bytes:
        return self.read(size)


def _post(client, path: str, data: bytes, headers: dict | None = None, *, chunked: bool = False):
    stream = CountingStream(data)
    # Chunked: no Content-Length, and the server says it ends the stream (as gunicorn does).
    kw = ({"environ_overrides": {"wsgi.input_terminated": True}, "headers": {**(headers or {}),
          "Transfer-Encoding": "chunked"}} if chunked else {"headers": headers or {}})
    started = time.perf_counter()
    resp = client.post(path, input_stream=stream, content_type="application/json", **kw)
    return resp, getattr(stream, "consumed", 0), time.perf_counter() - started


def _problem(resp, status: int) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["request_id"]
    return body


@pytest.mark.parametrize("path,status", [("/act", 401), ("/openvla/openvla-tiny/act", 401), ("/v1/jobs", 401),
                                         ("/no/such/path", 404), ("/health", 405)])
def test_anonymous_hostile_body_is_refused_unread(client, path, status):
    resp, consumed, elapsed = _post(client, path, HOSTILE)
    _problem(resp, status)
    assert consumed == 0  # not a byte of the body was read, so nothing was parsed
    assert elapsed < 0.5


def test_bad_key_on_act_is_401_unread(client):
    resp, consumed, _ = _post(client, "/act", HOSTILE, {"Authorization": "Bearer vla_live_nope"})
    _problem(resp, 401)
    assert consumed == 0


@pytest.mark.parametrize("method,path", [("post", "/act"), ("post", "/v1/jobs"), ("post", "/v1/inference"),
                                         ("delete", "/v1/jobs/00000000-0000-0000-0000-000000000000")])
def test_content_length_over_the_route_limit_is_413_before_reading(client, make_customer, settings, method, path):
    headers = make_customer()[2]
    limit = body_limits.SMALL_BODY if method == "delete" else body_limits.inference_limit(settings)
    stream = CountingStream(b"{}")  # the header claims more than the route takes: nothing may be read
    resp = client.open(path, method=method.upper(), input_stream=stream, content_type="application/json",
                       headers=headers, environ_overrides={"CONTENT_LENGTH": str(limit + 1)})
    assert "too large" in _problem(resp, 413)["detail"] or "at most" in resp.get_json()["detail"]
    assert getattr(stream, "consumed", 0) == 0


def test_chunked_body_over_the_limit_is_413(client, make_customer, settings):
    headers = make_customer()[2]
    limit = body_limits.inference_limit(settings)
    resp, consumed, _ = _post(client, "/v1/jobs", b" " * (limit + 10), headers, chunked=True)
    _problem(resp, 413)
    assert consumed <= limit + 1  # reading stopped at the limit


def test_small_routes_take_small_bodies(app):
    with app.test_request_context("/v1/usage"):
        assert body_limits.limit_for("usage.Usage", "GET") == body_limits.SMALL_BODY
        assert body_limits.limit_for("replays.Replays", "POST") == app.config["MAX_CONTENT_LENGTH"]
        assert body_limits.limit_for(None, "POST") == 0


def test_authenticated_hostile_body_is_refused_before_parsing(client, make_customer):
    """A paying customer's 3 MB of empty objects: refused from a byte count, not a million allocations."""
    headers = make_customer()[2]
    for path in ("/v1/jobs", "/act"):
        resp, _, elapsed = _post(client, path, HOSTILE, headers)
        assert _problem(resp, 422)["type"].endswith("too_many_elements")
        assert elapsed < 0.5


# The same U+0001 instruction in each of /act's body forms, and on the REST route.
def _json_form() -> tuple[bytes, str]:
    return json_numpy.dumps({"image": IMAGE, "instruction": "pick\u0001up"}).encode(), "application/json"


def _encoded_form() -> tuple[bytes, str]:
    inner = json_numpy.dumps({"image": IMAGE, "instruction": "pick\u0001up"})
    return json.dumps({"encoded": inner}).encode(), "application/json"


def _text_plain_form() -> tuple[bytes, str]:
    return _json_form()[0], "text/plain"


@pytest.mark.parametrize("form", [_json_form, _encoded_form, _text_plain_form], ids=["json", "encoded", "text"])
def test_control_character_on_act_is_422_in_every_body_form(client, make_customer, form):
    headers = make_customer()[2]
    data, content_type = form()
    resp = client.post("/act", data=data, content_type=content_type, headers=headers)
    body = _problem(resp, 422)
    assert body["type"].endswith("invalid_characters") and body["field"] == "instruction"
    rest = client.post("/v1/inference", json=request_body(instruction="pick\u0001up"), headers=headers)
    assert _problem(rest, 422)["type"] == body["type"] and rest.get_json()["field"] == body["field"]


def test_act_array_object_with_extra_keys_is_422(client, make_customer):
    headers = make_customer()[2]
    image = {"__numpy__": base64.b64encode(IMAGE.tobytes()).decode(), "dtype": "|u1", "shape": [64, 64, 3], "x": 1}
    resp = client.post("/act", json={"image": image, "instruction": "x"}, headers=headers)
    assert _problem(resp, 422)["type"].endswith("invalid_body")


def test_guard_walk_is_bounded_and_names_the_field():
    with pytest.raises(Exception) as err:
        input_guard.check_value([0] * (input_guard.MAX_ELEMENTS + 1))
    assert err.value.code == "too_many_elements"
    with pytest.raises(Exception) as err:
        input_guard.check_value({"a": [{"b": 1}, {"c": ["ok", "x\u0001"]}]})
    assert err.value.field == "a.1.c.1"
    with pytest.raises(Exception) as err:
        input_guard.check_value({"a": {"k\u0002": 1}}, "spec")
    assert err.value.field == "spec.a.k\ufffd"
    with pytest.raises(Exception) as err:
        input_guard.check_value({"a": [1, 2, float("inf")]})
    assert err.value.field == "a.2"
    input_guard.check_value({"a": [[]] * 100, "b": {"c": "tab\tok"}})  # siblings after a subtree: no stale path


def test_guard_walk_allocates_no_path_per_element():
    import tracemalloc

    value = {"items": [{"k": "v", "n": 1} for _ in range(input_guard.MAX_ELEMENTS // 3 - 1)]}
    tracemalloc.start()
    input_guard.check_value(value)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024  # an iterator per level, not a string or a tuple per value


def test_over_the_limit_act_is_429_before_any_image_work(client, over_limit_free, conversions):
    big = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    data = json_numpy.dumps({"image": big, "instruction": "pick up the block"})
    resp = client.post("/act", data=data, content_type="application/json", headers=over_limit_free)
    assert _problem(resp, 429)["type"].endswith("rate_limited") and resp.headers["Retry-After"]
    assert conversions == []  # the image was never converted


def test_admission_itself_refuses_before_the_conversion(client, over_limit_free, conversions, monkeypatch):
    """Without /act's early look at the limits (a request racing past it), the charge in admission still
    comes before the image is converted."""
    from web.services import admission

    monkeypatch.setattr(admission, "refuse_if_over_limit", lambda **_: None)
    data = json_numpy.dumps({"image": IMAGE, "instruction": "pick up the block"})
    resp = client.post("/act", data=data, content_type="application/json", headers=over_limit_free)
    assert _problem(resp, 429)["type"].endswith("rate_limited")
    assert conversions == []


def test_over_the_limit_act_body_is_not_even_read(client, over_limit_free):
    resp, consumed, _ = _post(client, "/act", json_numpy.dumps({"image": IMAGE, "instruction": "x"}).encode(),
                              over_limit_free)
    _problem(resp, 429)
    assert consumed == 0


def test_over_the_limit_openpi_message_is_429_before_any_image_work(app, over_limit_free, conversions):
    from web.compat.openpi import session
    from web.errors import ApiError

    conn = session.Connection(model="pi0-tiny", authorization=over_limit_free["Authorization"])
    obs = {"observation/image": IMAGE, "observation/wrist_image": IMAGE, "prompt": "stack the cups"}
    with pytest.raises(ApiError) as err:
        session.infer(app, conn, obs)
    assert err.value.status == 429 and conversions == []


def test_refused_conversion_after_the_charge_is_refunded(client, make_customer, conversions):
    """An image refused only when converted (values past 255) is counted, then given back."""
    headers = make_customer("free")[2]
    data = json_numpy.dumps({"image": IMAGE.astype(np.int16) * 3, "instruction": "x"})
    resp = client.post("/act", data=data, content_type="text/plain", headers=headers)
    assert _problem(resp, 422)["type"].endswith("invalid_image")
    assert len(conversions) == 1
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0
