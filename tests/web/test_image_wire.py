"""What crosses Redis for one job: the image bytes once, as the client sent them, beside a message that only
describes them (workers/wire/frames.py); no base64 image in the Celery message nor in the resend copy."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid

import pytest

from tests.helpers import png_b64, request_body
from workers.wire import fastjson, frames, resend

# Enabled, and no worker consumes it in any test: its messages stay in the broker to be read here.
NO_WORKER_MODEL = "openvla-slow"


@pytest.fixture(scope="module")
def client(settings):
    """An app without fail-fast admission: these tests read what crosses Redis for a model no worker serves,
    and whatever earlier tests left in that model's backlog must not refuse the request before it is sent."""
    from web.app import create_app

    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, admission_fail_fast=False)})
    return app.test_client()


def _broker_message(redis_client, job_id: str) -> bytes:
    for key in redis_client.scan_iter(match=f"infer.{NO_WORKER_MODEL}*"):
        for raw in redis_client.lrange(key, 0, -1):
            if job_id.encode() in base64.b64decode(json.loads(raw)["body"]):
                return raw
    raise AssertionError(f"no broker message for job {job_id}")


def test_the_image_crosses_redis_once_as_bytes_beside_a_small_message(client, make_customer, redis_client):
    headers = make_customer()[2]
    b64 = png_b64(224, 224, seed=3)
    png = base64.b64decode(b64)
    body = request_body(NO_WORKER_MODEL, images={"primary": b64}, image=None, deadline_ms=2000)
    r = client.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    assert redis_client.hgetall(frames.key(job_id)) == {b"primary": png}
    assert 2_000 < redis_client.pttl(frames.key(job_id)) <= 32_000  # the deadline plus a margin
    message = _broker_message(redis_client, job_id)
    assert len(message) < 4096 < len(png)  # descriptions, not images
    assert json.loads(message)["content-type"] == fastjson.MESSAGE_CONTENT_TYPE  # orjson's JSON, never a pickle
    args = json.loads(base64.b64decode(json.loads(message)["body"]))[0][0]
    assert args["images"]["primary"]["sha256"] == hashlib.sha256(png).hexdigest()
    assert args["images"]["primary"]["format"] == "PNG"
    copy = redis_client.get(resend.key(job_id))
    assert len(copy) < 4096 and b64[:64].encode() not in copy


def test_act_hands_over_the_clients_array_never_encoded(client, make_customer, redis_client):
    """/act's json-numpy image reaches Redis as the array's own bytes, described by dtype and shape."""
    import json_numpy
    import numpy as np

    headers = make_customer()[2]
    image = np.random.default_rng(5).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    instruction = f"pick up block {uuid.uuid4().hex[:8]}"
    body = json_numpy.dumps({"image": image, "instruction": instruction, "deadline_ms": 200})
    resp = client.post(f"/openvla/{NO_WORKER_MODEL}/act", data=body, content_type="application/json",
                       headers=headers)
    assert resp.status_code == 504, resp.get_data(as_text=True)  # enqueued; no worker serves this model
    found = [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
             for key in redis_client.scan_iter(match=f"infer.{NO_WORKER_MODEL}*")
             for raw in redis_client.lrange(key, 0, -1)]
    [described] = [a["images"] for a in found if isinstance(a, dict) and a.get("instruction") == instruction]
    [meta] = described.values()
    assert meta["format"] == frames.RAW and meta["dtype"] == "|u1" and meta["shape"] == [224, 224, 3]
    assert meta["sha256"] == hashlib.sha256(image.tobytes()).hexdigest() and meta["bytes"] == image.nbytes
