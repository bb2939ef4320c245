"""REST's msgpack bodies (web/msgpack_body.py): the JSON body's document, checked by the same schema, with camera
images as raw arrays (msgpack-numpy, as openpi writes it) or encoded bytes, stored beside the job's message as
they came; every bad body a 4xx problem document; a customer over its limit refused before the body is read."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import uuid

import msgpack
import numpy as np
import pytest

from tests.helpers import png_b64, request_body
from tests.web.test_bad_input import CASES, _assert_problem, _jobs
from web import body_limits
from workers.wire import frames, resend

MSGPACK = "application/msgpack"
NO_WORKER_MODEL = "openvla-slow"  # enabled, and no worker consumes it here: its messages stay in the broker
IMAGE = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def ndarray(arr: np.ndarray, **override) -> dict:
    """An array as openpi_client.msgpack_numpy packs it (bin keys); `override` replaces data, dtype or shape."""
    packed = {"__ndarray__": True, "data": arr.tobytes(), "dtype": arr.dtype.str, "shape": arr.shape, **override}
    return {k.encode(): v for k, v in packed.items()}


def packed(body: dict) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def raw_body(**overrides) -> dict:
    return request_body(NO_WORKER_MODEL, **{"image": ndarray(IMAGE), **overrides})


@pytest.fixture(scope="module")
def client(settings):
    """No fail-fast admission: requests for a model no worker serves must reach the broker whatever earlier
    tests left in its backlog (as in test_image_wire.py)."""
    from web.app import create_app

    return create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, admission_fail_fast=False)}
                      ).test_client()


@pytest.fixture()
def headers(make_customer):
    return make_customer()[2]


class _CountingStream(io.BytesIO):
    """The request's WSGI input, counting the bytes anything read from it."""

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.consumed = getattr(self, "consumed", 0) + len(out)
        return out


def _post(client, headers, body, path="/v1/jobs", content_type=MSGPACK, **kw):
    data = body if isinstance(body, bytes) else packed(body)
    return client.post(path, data=data, content_type=content_type, headers=headers, **kw)


def _message(redis_client, job_id: str) -> dict:
    """The Celery message's arguments for the job (what a GPU worker receives)."""
    for key in redis_client.scan_iter(match=f"infer.{NO_WORKER_MODEL}*"):
        for raw in redis_client.lrange(key, 0, -1):
            payload = base64.b64decode(json.loads(raw)["body"])
            if job_id.encode() in payload:
                assert len(raw) < 4096, "the message describes images; it does not carry them"
                return json.loads(payload)[0][0]
    raise AssertionError(f"no broker message for job {job_id}")


def test_raw_array_crosses_redis_as_its_own_bytes(client, headers, redis_client):
    resp = _post(client, headers, raw_body(deadline_ms=2000))
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert redis_client.hgetall(frames.key(job["id"])) == {b"primary": IMAGE.tobytes()}
    meta = _message(redis_client, job["id"])["images"]["primary"]
    assert meta == {"sha256": hashlib.sha256(IMAGE.tobytes()).hexdigest(), "bytes": IMAGE.nbytes,
                    "format": frames.RAW, "dtype": "|u1", "shape": [48, 64, 3], "height": 48, "width": 64}
    assert job["request"]["images"]["primary"] == meta  # the job row keeps the description too
    copy = redis_client.get(resend.key(job["id"]))
    assert len(copy) < 4096 and base64.b64encode(IMAGE.tobytes()[:48]) not in copy  # no base64 of the pixels


def test_encoded_image_as_bin_is_stored_as_it_came(client, headers, redis_client):
    png = base64.b64decode(png_b64(32, 40, seed=4))
    resp = _post(client, headers, request_body(NO_WORKER_MODEL, image=None, images={"primary": png}))
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    assert redis_client.hgetall(frames.key(job_id)) == {b"primary": png}
    meta = _message(redis_client, job_id)["images"]["primary"]
    assert meta["format"] == "PNG" and (meta["height"], meta["width"]) == (32, 40)


def test_str_keyed_arrays_and_array_fields_read_as_json_would(client, headers, redis_client):
    """Any msgpack library can write the array map with str keys; a state sent as an array becomes a list."""
    image = {"__ndarray__": True, "data": IMAGE.tobytes(), "dtype": "|u1", "shape": [48, 64, 3]}
    state = np.linspace(-1, 1, 7, dtype=np.float32)
    seed = {b"__npgeneric__": True, b"data": 3, b"dtype": "<i8"}  # a numpy scalar, as openpi packs one
    resp = _post(client, headers, request_body(NO_WORKER_MODEL, image=image, state=ndarray(state), seed=seed))
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["request"]["state"] == state.tolist() and job["request"]["options"]["seed"] == 3
    assert job["request"]["images"]["primary"]["format"] == frames.RAW


def test_x_msgpack_and_the_inference_route(client, headers):
    """application/x-msgpack too; POST /v1/inference reads the same body (no worker serves this model: its
    deadline passes, and the 504 names the job)."""
    resp = _post(client, headers, raw_body(deadline_ms=200), path="/v1/inference",
                 content_type="application/x-msgpack")
    job_id = _assert_problem(resp, 504)["job_id"]
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()
    assert job["request"]["images"]["primary"]["format"] == frames.RAW


def test_idempotency_key_compares_msgpack_bodies(client, headers):
    png = base64.b64decode(png_b64(seed=9))
    key = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    first = _post(client, key, request_body(NO_WORKER_MODEL, image=png))
    again = _post(client, key, request_body(NO_WORKER_MODEL, image=png))
    assert first.status_code == again.status_code == 202 and first.get_json()["id"] == again.get_json()["id"]
    other = _post(client, key, raw_body())
    assert _assert_problem(other, 422)["type"].endswith("idempotency_key_reused")


@pytest.mark.parametrize("name,mutate,status,field", CASES, ids=[c[0] for c in CASES])
def test_the_json_bodys_refusals_hold_in_msgpack(client, headers, db_session, name, mutate, status, field):
    """The same schema and checks: every bad JSON body of test_bad_input.py, sent as msgpack, is refused alike."""
    body = request_body()
    mutate(body)
    before = _jobs(db_session)
    _assert_problem(_post(client, headers, body), status, field)
    assert _jobs(db_session) == before


def _deep(n: int) -> dict:
    value: dict = {"type": "widowx_250"}
    for _ in range(n):
        value = {"x": value}
    return value


HOSTILE = {
    "not msgpack": (b"\xc1", 400, "invalid_msgpack"),
    "empty body": (b"", 400, "invalid_msgpack"),
    "truncated": (packed(raw_body())[:-5], 400, "invalid_msgpack"),
    "trailing bytes": (packed(raw_body()) + b"\x00", 400, "invalid_msgpack"),
    "ext type (a timestamp)": (packed(raw_body(seed=msgpack.Timestamp(1))), 400, "invalid_msgpack"),
    "invalid utf-8": (b"\x81\xa5model\xa3\xff\xfe\xfd", 400, "invalid_msgpack"),
    "not a map": (packed([1, 2, 3]), 422, "invalid_body"),
    "a string": (packed("model"), 422, "invalid_body"),
    "object dtype": (raw_body(image=ndarray(IMAGE, dtype="|O")), 422, "invalid_array"),
    "unicode dtype": (raw_body(image=ndarray(IMAGE, dtype="<U4")), 422, "invalid_array"),
    "float image": (raw_body(image=ndarray(IMAGE.astype(np.float32))), 422, "invalid_image"),
    "bool image": (raw_body(image=ndarray(IMAGE > 9)), 422, "invalid_image"),
    "bytes short of the shape": (raw_body(image=ndarray(IMAGE, shape=[49, 64, 3])), 422, "invalid_array"),
    "ragged shape": (raw_body(image=ndarray(IMAGE, shape=[48, "64", 3])), 422, "invalid_array"),
    "five dimensions": (raw_body(image=ndarray(IMAGE.reshape(1, 1, 48, 64, 3))), 422, "invalid_array"),
    "two channels": (raw_body(image=ndarray(IMAGE[:, :, :2])), 422, "invalid_image"),
    "empty array": (raw_body(image=ndarray(IMAGE[:0])), 422, "invalid_image"),
    "data as text": (raw_body(image=ndarray(IMAGE, data="AAAA")), 422, "invalid_array"),
    "a list for an image": (raw_body(image=IMAGE[:2, :2].tolist()), 422, "validation_error"),
    "bin outside an image": (raw_body(instruction=b"pick up"), 422, "invalid_value"),
    "integer map key": (raw_body(robot_config={1: "widowx_250"}), 422, "invalid_key"),
    "bin map key": ({**raw_body(), b"model": "x"}, 422, "invalid_key"),
    "control character": (raw_body(instruction="pick\x01up"), 422, "invalid_characters"),
    "nested too deep": (raw_body(robot_config=_deep(40)), 422, "nesting_too_deep"),
    "nested past msgpack's stack": (b"\x82\xa5model\xa1x\xabrobot_config" + b"\x91" * 5000, 400, "invalid_msgpack"),
    "a list too long": (raw_body(robot_config={"type": "widowx_250", "x": [0] * 20_001}), 422, "too_many_elements"),
    "many small lists": (raw_body(robot_config={"x": [[0] * 10] * 2_100}), 422, "too_many_elements"),
    "huge state array": (raw_body(state=ndarray(np.zeros(30_000, np.float32))), 422, "too_many_elements"),
    "NaN in a state array": (raw_body(state=ndarray(np.full(7, np.nan))), 422, "number_out_of_range"),
    "integer past 2**53": (raw_body(seed=2**60), 422, "number_out_of_range"),
    "array length claimed": (b"\x82\xa5model\xa1x\xa5state\xdd\xff\xff\xff\xff", 422, "too_many_elements"),
    "bin longer than the body": (b"\x81\xa5image\xc6\xff\xff\xff\xff", 400, "invalid_msgpack"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_msgpack_is_a_4xx_problem_and_costs_nothing(client, headers, db_session, name):
    body, status, code = HOSTILE[name]
    before = _jobs(db_session)
    problem = _assert_problem(_post(client, headers, body), status)
    assert problem["type"].endswith(code), problem
    assert _jobs(db_session) == before
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0


def test_an_image_over_its_byte_cap_is_413(settings, headers):
    """One bin is at most RawImage's cap (MAX_IMAGE_BYTES x 4), one string at most a base64 image: refused from
    msgpack's length prefix, before the value is built."""
    from web.app import create_app

    small = dataclasses.replace(settings, max_image_bytes=64 * 1024, admission_fail_fast=False)
    client = create_app({"TESTING": True, "SETTINGS": small}).test_client()
    big = np.zeros((200, 200, 3), np.uint8)  # 120,000 bytes: within 4 x 64 KB
    assert _post(client, headers, raw_body(image=ndarray(big))).status_code == 202
    bigger = np.zeros((300, 300, 3), np.uint8)  # 270,000 bytes > 262,144
    problem = _assert_problem(_post(client, headers, raw_body(image=ndarray(bigger))), 413)
    assert problem["type"].endswith("body_too_large")
    text = "x" * (small.max_image_bytes * 4 // 3 + 5)  # a string longer than a base64 image may be
    problem = _assert_problem(_post(client, headers, raw_body(instruction=text)), 413)
    assert problem["type"].endswith("body_too_large")


def test_content_length_over_the_limit_is_413_before_reading(client, headers, settings):
    stream = io.BytesIO(b"\x80")
    resp = client.post("/v1/inference", input_stream=stream, content_type=MSGPACK, headers=headers,
                       environ_overrides={"CONTENT_LENGTH": str(body_limits.inference_limit(settings) + 1)})
    _assert_problem(resp, 413)
    assert stream.tell() == 0


def test_chunked_body_over_the_limit_is_413(client, headers, settings):
    """No Content-Length (chunked, the server ends the stream): reading stops at the route's limit."""
    limit = body_limits.inference_limit(settings)
    stream = _CountingStream(b"\xc4" + b"\x00" * (limit + 10))
    resp = client.post("/v1/jobs", input_stream=stream, content_type=MSGPACK,
                       headers={**headers, "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})
    _assert_problem(resp, 413)
    assert stream.consumed <= limit + 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "multipart/form-data; b=x",
                                          "application/msgpack-ish"])
def test_other_media_types_are_415(client, headers, content_type):
    for path in ("/v1/jobs", "/v1/inference"):
        resp = client.post(path, data=packed(raw_body()), content_type=content_type, headers=headers)
        problem = _assert_problem(resp, 415)
        assert "application/msgpack" in problem["detail"] and "application/msgpack" in resp.headers["Accept-Post"]


def test_no_body_at_all_names_the_missing_fields(client, headers):
    resp = client.post("/v1/jobs", headers=headers)
    assert "model" in _assert_problem(resp, 422)["errors"]


def test_over_the_limit_is_429_before_the_body_is_read(client, over_limit_free, conversions):
    big = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    stream = _CountingStream(packed(raw_body(image=ndarray(big))))
    resp = client.post("/v1/inference", input_stream=stream, content_type=MSGPACK, headers=over_limit_free)
    assert _assert_problem(resp, 429)["type"].endswith("rate_limited") and resp.headers["Retry-After"]
    assert getattr(stream, "consumed", 0) == 0 and conversions == []  # not read, so not decoded or converted


def test_admission_itself_refuses_before_the_conversion(client, over_limit_free, conversions, monkeypatch):
    """Without the early look at the limits (a request racing past it), the charge in admission still comes
    before the array is laid out."""
    from web.services import admission

    monkeypatch.setattr(admission, "refuse_if_over_limit", lambda **_: None)
    resp = _post(client, over_limit_free, raw_body())
    assert _assert_problem(resp, 429)["type"].endswith("rate_limited")
    assert conversions == []


def test_a_conversion_refused_after_the_charge_is_refunded(client, make_customer, conversions):
    headers = make_customer("free")[2]
    resp = _post(client, headers, raw_body(image=ndarray(IMAGE.astype(np.int16) * 3)))
    assert _assert_problem(resp, 422, "image")["type"].endswith("invalid_image")
    assert len(conversions) == 1  # counted first, then converted, then refused
    assert client.get("/v1/usage", headers=headers).get_json()["requests_this_minute"] == 0


def test_openapi_lists_both_media_types(client):
    spec = client.get("/openapi.json").get_json()
    for path, method in (("/v1/inference", "post"), ("/v1/jobs", "post")):
        content = spec["paths"][path][method]["requestBody"]["content"]
        assert set(content) == {"application/json", MSGPACK}
    image = spec["components"]["schemas"]["InferenceMsgpackRequest"]["properties"]["image"]["anyOf"]
    assert {"format": "binary"}.items() <= image[0].items() and "__ndarray__" in image[1]["properties"]
