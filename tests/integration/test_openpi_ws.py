"""openpi's websocket protocol, driven by the real `openpi-client` package (WebsocketClientPolicy, unchanged)
against the `openpi` process, PostgreSQL, Redis and real worker processes."""
from __future__ import annotations

import time
import uuid

import msgpack
import numpy as np
import pytest
import requests
import websockets.exceptions
import websockets.sync.client
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from tests.integration.live import free_port, serve
from web.accounts import service
from workers.store.db import session_scope
from workers.store.models import Tier

RNG = np.random.default_rng(0)


def _img(h=224, w=224):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


LIBERO = {"observation/image": _img(), "observation/wrist_image": _img(),
          "observation/state": np.linspace(-0.5, 0.5, 8), "prompt": "put the bowl on the plate"}
DROID = {"observation/exterior_image_1_left": _img(), "observation/wrist_image_left": _img(),
         "observation/joint_position": np.zeros(7), "observation/gripper_position": np.array([0.5]),
         "prompt": "pick up the marker"}
ALOHA = {"images": {"cam_high": np.moveaxis(_img(), -1, 0), "cam_left_wrist": np.moveaxis(_img(), -1, 0)},
         "state": np.zeros(14), "prompt": "fold the towel"}


@pytest.fixture(scope="module")
def ws_url(tmp_path_factory):
    port = free_port()
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path_factory.mktemp("openpi") / "ws.log"):
        yield f"ws://127.0.0.1:{port}/v1/openpi"


@pytest.fixture()
def key(make_customer):
    return make_customer("enterprise")[1]


def _jobs(live_url, key, n=1):
    return requests.get(f"{live_url}/v1/jobs?limit={n}", headers={"Authorization": f"Bearer {key}"},
                        timeout=10).json()["items"]


def test_libero_layout_chunk_back(ws_url, key, workers, live_url):
    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny", api_key=key)
    meta = policy.get_server_metadata()
    assert meta["model"] == "pi0-tiny" and meta["chunk_length"] == 50 and meta["action_dim"] == 7
    out = policy.infer(LIBERO)
    assert out["actions"].shape == (50, 7) and np.isfinite(out["actions"]).all()
    assert out["server_timing"]["infer_ms"] > 0 and out["vlaapi"]["safety"]["decision"] in ("allowed", "modified")
    again = policy.infer(LIBERO)
    assert "prev_total_ms" in again["server_timing"]
    job = _jobs(live_url, key)[0]
    assert job["state"] == "succeeded" and job["request_id"] == again["vlaapi"]["request_id"]
    assert set(job["request"]["images"]) == {"base_0_rgb", "left_wrist_0_rgb"} and len(job["request"]["state"]) == 8
    np.testing.assert_allclose(again["actions"], job["result"]["action"]["values"])
    usage = requests.get(f"{live_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert usage["requests_this_minute"] == 2


def test_droid_layout_state_is_joints_then_gripper(ws_url, key, workers, live_url):
    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny?mapping=droid", api_key=key)
    assert policy.infer(DROID)["actions"].shape == (50, 7)
    job = _jobs(live_url, key)[0]
    assert job["request"]["state"] == [0.0] * 7 + [0.5]
    assert job["request"]["images"]["base_0_rgb"]["height"] == 224


def test_error_is_a_text_frame_and_the_connection_survives(ws_url, key, workers):
    """ALOHA's 14-D state does not fit this 8-D model: openpi's client raises; the next message is served."""
    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny", api_key=key)
    with pytest.raises(RuntimeError, match="422 invalid_state"):
        policy.infer(ALOHA)
    assert policy.infer(LIBERO)["actions"].shape == (50, 7)


def test_single_step_model_gets_a_chunk_of_one(ws_url, key, workers):
    policy = WebsocketClientPolicy(host=f"{ws_url}/openvla-tiny", api_key=key)
    obs = {"observation/image": _img(), "prompt": "open the drawer"}
    assert policy.infer(obs)["actions"].shape == (1, 7)


def test_handshake_refuses_bad_key_and_unknown_model(ws_url, key):
    with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
        WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny", api_key="vla_live_nope")
    assert exc.value.response.status_code == 401
    with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
        WebsocketClientPolicy(host=f"{ws_url}/pi0-large", api_key=key)
    assert exc.value.response.status_code == 422 and b"pi0-tiny" in exc.value.response.body


def test_hostile_frames_are_refused(ws_url, key, workers):
    with websockets.sync.client.connect(f"{ws_url}/pi0-tiny", additional_headers={"Authorization": f"Api-Key {key}"},
                                        max_size=None) as ws:
        msgpack_numpy.unpackb(ws.recv())
        for frame in (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"abc", b"dtype": "|O", b"shape": [3]}}),
                      msgpack.packb({"x": {b"__ndarray__": True, b"data": b"abc", b"dtype": "<f8", b"shape": [9]}}),
                      b"\xc1 not msgpack", "a text frame", msgpack.packb([1, 2])):
            ws.send(frame)
            reply = ws.recv()
            assert isinstance(reply, str) and reply.startswith("422 "), reply


def test_rate_limit_and_deadline(ws_url, settings, workers):
    tier = f"t-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.database_url) as s:
        s.add(Tier(name=tier, requests_per_minute=1))
        s.flush()
        _, key = service.create_key(s, service.create_customer(s, f"c-{tier}", tier), settings.api_key_pepper)
    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny?deadline_ms=1", api_key=key)
    with pytest.raises(RuntimeError, match="504 deadline_exceeded"):
        policy.infer(LIBERO)
    with pytest.raises(RuntimeError, match="429 rate_limited"):
        policy.infer(LIBERO)


def test_a_message_carries_its_own_deadline(ws_url, key, workers, live_url):
    """openpi's protocol has no deadline per message: `vlaapi_deadline_ms` in the observation is this message's,
    over the connection's `?deadline_ms` (a chunk robot's deadline moves with its queued actions)."""
    from datetime import datetime

    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny?deadline_ms=1", api_key=key)
    assert policy.infer({**LIBERO, "vlaapi_deadline_ms": np.int64(20000)})["actions"].shape == (50, 7)
    job = _jobs(live_url, key)[0]
    allowed = datetime.fromisoformat(job["deadline_at"]) - datetime.fromisoformat(job["created_at"])
    assert 19 < allowed.total_seconds() <= 20.5, job
    with pytest.raises(RuntimeError, match="422"):
        policy.infer({**LIBERO, "vlaapi_deadline_ms": "soon"})
    with pytest.raises(RuntimeError, match="504 deadline_exceeded"):
        policy.infer(LIBERO)  # without it, the connection's 1 ms


def test_connection_cap_and_health(tmp_path, key):
    """OPENPI_MAX_CONNECTIONS bounds what one process holds: the next handshake is a 503, not a hang."""
    port = free_port()
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path / "ws.log",
               env={"OPENPI_MAX_CONNECTIONS": "1"}):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "OK\n"
        url = f"ws://127.0.0.1:{port}/v1/openpi/pi0-tiny"
        first = WebsocketClientPolicy(host=url, api_key=key)
        with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
            WebsocketClientPolicy(host=url, api_key=key)
        assert exc.value.response.status_code == 503
        first._ws.close()
        time.sleep(0.2)
        assert WebsocketClientPolicy(host=url, api_key=key).get_server_metadata()["model"] == "pi0-tiny"
