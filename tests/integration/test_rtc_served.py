"""Real-time chunking served end to end: REST (the Python client), openpi's websocket (its own client, keys
`rtc/...`), against gunicorn, the openpi process, PostgreSQL, Redis and real pi0-tiny / openvla-tiny workers.
Safety mode `monitor`, so the chunks come back as the model made them."""
from __future__ import annotations

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from vlaapi_client import InvalidRequest, VLAClient

from tests.integration.live import free_port, serve

IMAGE = np.random.default_rng(3).integers(0, 255, (224, 224, 3), dtype=np.uint8)
STATE = np.linspace(-0.5, 0.5, 8)
DELAY = 3


@pytest.fixture()
def key(make_customer):
    return make_customer("enterprise")[1]


@pytest.fixture(scope="module")
def ws_url(tmp_path_factory):
    port = free_port()
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path_factory.mktemp("openpi-rtc") / "ws.log"):
        yield f"ws://127.0.0.1:{port}/v1/openpi"


def _gap(chunk: np.ndarray, prev: np.ndarray) -> float:
    return float(np.abs(chunk[:DELAY] - prev[:DELAY]).max())


def test_rest_rtc_continues_the_executing_chunk(live_url, key, workers):
    client = VLAClient(live_url, key, model="pi0-tiny")
    listed = {m["name"]: m for m in client.models()}
    assert listed["pi0-tiny"]["real_time_chunking"] and not listed["openvla-tiny"]["real_time_chunking"]
    common = {"state": STATE, "safety": {"mode": "monitor"}}
    executing = client.act(IMAGE, "pick up the cup", seed=1, **common)
    prev = executing[10:]  # ten played: the remainder, next one first
    plain = client.act(IMAGE, "pick up the cup", seed=2, **common)
    guided = client.act(IMAGE, "pick up the cup", seed=2, rtc={"prev_actions": prev.tolist(),
                                                               "inference_delay": DELAY}, **common)
    assert guided.shape == plain.shape == (50, 7)
    assert _gap(guided, prev) * 4 < _gap(plain, prev), (_gap(guided, prev), _gap(plain, prev))
    job = client.get(client.infer(IMAGE, "pick up the cup", seed=2, rtc={"prev_actions": prev.tolist(),
                                                                         "inference_delay": DELAY}, **common).job_id)
    assert job["request"]["options"]["rtc"]["inference_delay"] == DELAY  # kept with the job, as sent


def test_rest_rtc_refusals(live_url, key, workers):
    client = VLAClient(live_url, key)
    with pytest.raises(InvalidRequest) as exc:
        client.act(IMAGE, "open the drawer", model="openvla-tiny", unnorm_key="bridge_orig",
                   rtc={"prev_actions": [[0.0] * 7], "inference_delay": 1})
    assert exc.value.status == 422 and exc.value.code == "rtc_unsupported"
    with pytest.raises(InvalidRequest) as exc:
        client.act(IMAGE, "pick", model="pi0-tiny", state=STATE,
                   rtc={"prev_actions": [[0.0] * 5], "inference_delay": 1})
    assert exc.value.code == "invalid_rtc"


def test_openpi_rtc_keys(ws_url, key, workers):
    policy = WebsocketClientPolicy(host=f"{ws_url}/pi0-tiny", api_key=key)
    assert policy.get_server_metadata()["real_time_chunking"] is True
    obs = {"observation/image": IMAGE, "observation/state": STATE, "prompt": "pick up the cup"}
    executing = policy.infer(obs)["actions"]
    prev = executing[10:]
    plain = policy.infer(obs)["actions"]
    flat = policy.infer({**obs, "rtc/prev_actions": prev, "rtc/inference_delay": np.int64(DELAY),
                         "rtc/prefix_attention_schedule": "exp"})["actions"]
    nested = policy.infer({**obs, "rtc": {"prev_actions": prev, "inference_delay": DELAY, "jacobian": "identity"}})
    for chunk in (flat, nested["actions"]):
        assert chunk.shape == (50, 7) and _gap(chunk, prev) * 4 < _gap(plain, prev)
    with pytest.raises(RuntimeError, match="422"):
        policy.infer({**obs, "rtc/prev_actions": prev[:, :3], "rtc/inference_delay": DELAY})
    with pytest.raises(RuntimeError, match="422"):
        policy.infer({**obs, "rtc/prev_actions": prev})  # no delay
    assert policy.infer(obs)["actions"].shape == (50, 7)  # the connection survives
