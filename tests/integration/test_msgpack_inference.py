"""REST's msgpack bodies end to end (issue 26): the real web app, PostgreSQL, Redis and worker processes. The same
pixels give the same action whichever way they travel: a raw array in msgpack (stored and read as its own
bytes), a PNG file's bytes in msgpack, or base64 PNG in JSON."""
from __future__ import annotations

import base64
import io

import msgpack
import numpy as np
from PIL import Image

from tests.helpers import request_body

RNG = np.random.default_rng(26)
IMAGE = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _ndarray(arr: np.ndarray) -> dict:
    """msgpack-numpy as openpi_client.msgpack_numpy packs an array."""
    return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}


def _msgpack(client, headers, body: dict):
    return client.post("/v1/inference", data=msgpack.packb(body), content_type="application/msgpack",
                       headers=headers)


def _action(resp) -> list:
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["action"]["values"]


def _stored(client, headers, resp) -> dict:
    return client.get(f"/v1/jobs/{resp.get_json()['job_id']}", headers=headers).get_json()["request"]["images"]


def test_raw_array_gives_the_same_action_as_its_png(client, headers, workers):
    """openvla-tiny decodes greedily: the same pixels give bitwise the same action."""
    body = request_body(unnorm_key="bridge_orig")
    as_json = client.post("/v1/inference", json={**body, "image": base64.b64encode(_png(IMAGE)).decode()},
                          headers=headers)
    as_array = _msgpack(client, headers, {**body, "image": _ndarray(IMAGE)})
    as_bytes = _msgpack(client, headers, {**body, "image": _png(IMAGE)})
    assert _action(as_array) == _action(as_json) == _action(as_bytes)
    raw, png = _stored(client, headers, as_array)["primary"], _stored(client, headers, as_bytes)["primary"]
    assert raw["format"] == "raw" and raw["bytes"] == IMAGE.nbytes and raw["shape"] == [224, 224, 3]
    assert png["format"] == "PNG" and (png["height"], png["width"]) == (224, 224)


def test_multi_camera_arrays_and_a_state_array(client, headers, workers):
    """pi0-tiny with a seed: two cameras and the state as arrays give the chunk the JSON body gives."""
    state = np.array([0.0, 0.5, -0.25, 1.0, 0.125, -1.0, 0.75, 0.0], dtype=np.float32)  # exact in float32
    body = request_body("pi0-tiny", image=None, seed=3)
    as_json = client.post("/v1/inference", headers=headers, json={
        **body, "state": state.tolist(),
        "images": {"base_0_rgb": base64.b64encode(_png(IMAGE)).decode(),
                   "left_wrist_0_rgb": base64.b64encode(_png(WRIST)).decode()}})
    as_arrays = _msgpack(client, headers, {**body, "state": _ndarray(state),
                                           "images": {"base_0_rgb": _ndarray(IMAGE),
                                                      "left_wrist_0_rgb": _ndarray(WRIST)}})
    chunk = _action(as_arrays)
    assert len(chunk) == 50 and chunk == _action(as_json)
    assert {meta["format"] for meta in _stored(client, headers, as_arrays).values()} == {"raw"}
