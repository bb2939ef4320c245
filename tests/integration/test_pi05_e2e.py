"""pi05-tiny served end to end by a real GPU worker process, enabled by configuration only: REST (what the
worker returns is what the policy computes on the decoded images), bad input as 4xx, /v1/models/list, the
openpi websocket door with the libero and droid layouts (real `openpi-client`), and a seeded replay."""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
import requests
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from PIL import Image

from tests.conftest import TEST_MODEL_DIR
from tests.helpers import png_b64, request_body
from tests.integration.live import free_port, serve
from tests.integration.replay_helpers import poll_replay, write_dataset
from tests.integration.workers import gpu_worker, wait_ready
from workers.policies.base import Observation

MODEL = "pi05-tiny"
STATE = [0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.4, 0.05]


@pytest.fixture(scope="module")
def enabled(settings) -> str:
    from workers.policies.presets import build_tiny_checkpoints

    build_tiny_checkpoints(TEST_MODEL_DIR, [MODEL], overwrite=False)
    return f"{settings.enabled_models},{MODEL}"


@pytest.fixture(scope="module")
def pi05_worker(redis_client, log_dir, workers, enabled):
    """Its own worker (the session's `workers` bring the safety worker and the other models)."""
    proc = gpu_worker(MODEL, log_dir, ENABLED_MODELS=enabled).start()
    try:
        wait_ready(redis_client, MODEL, worker=proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(settings, enabled):
    from web.app import create_app

    s = dataclasses.replace(settings, enabled_models=enabled)
    return create_app({"TESTING": True, "SETTINGS": s}).test_client()


@pytest.fixture(scope="module")
def policy():
    from workers.policies.pi05.policy import Pi05Policy

    return Pi05Policy.load(MODEL, TEST_MODEL_DIR / MODEL, dtype="float32", device="cpu")


def _decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _body(**overrides) -> dict:
    images = {"base_0_rgb": png_b64(96, 128, seed=1), "left_wrist_0_rgb": png_b64(seed=2)}
    base = {"image": None, "images": images, "state": STATE, "seed": 5, "instruction": "put the cup in the sink",
            "safety": {"mode": "monitor"}}
    return request_body(MODEL, **{**base, **overrides})


def test_rest_returns_what_the_policy_computes(client, headers, pi05_worker, policy) -> None:
    body = _body()
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    action = resp.get_json()["action"]
    assert action["chunk_length"] == 50 and np.asarray(action["values"]).shape == (50, 7)
    obs = Observation(images={k: _decoded(v) for k, v in body["images"].items()}, instruction=body["instruction"],
                      state=np.asarray(STATE), options={"seed": 5})
    np.testing.assert_allclose(action["values"], policy.predict([obs])[0].actions, atol=1e-5, rtol=0)
    again = client.post("/v1/inference", json=body, headers=headers).get_json()["action"]["values"]
    assert again == action["values"]


BAD = {
    "short state": (lambda b: {**b, "state": STATE[:5]}, "state"),
    "no state": (lambda b: {k: v for k, v in b.items() if k != "state"}, "state"),
    "unknown camera": (lambda b: {**b, "images": {**b["images"], "top": png_b64()}}, "images"),
    "no first camera": (lambda b: {**b, "images": {"left_wrist_0_rgb": png_b64()}}, "images"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_422_naming_the_field(client, headers, pi05_worker, case) -> None:
    edit, field = BAD[case]
    resp = client.post("/v1/inference", json=edit(_body()), headers=headers)
    doc = resp.get_json()
    assert resp.status_code == 422, doc
    assert field in json.dumps(doc), doc


def test_listed_when_enabled(client, headers, pi05_worker) -> None:
    models = {m["name"]: m for m in client.get("/v1/models/list", headers=headers).get_json()["models"]}
    m = models[MODEL]
    assert m["ready"] and m["family"] == "pi05" and m["chunk_length"] == 50 and m["state_dim"] == 8
    assert m["cameras"] == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert m["action_space"]["dimensions"] == 7


@pytest.fixture(scope="module")
def ws_url(tmp_path_factory, enabled):
    port = free_port()
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path_factory.mktemp("openpi05") / "ws.log",
               env={"ENABLED_MODELS": enabled}):
        yield f"ws://127.0.0.1:{port}/v1/openpi"


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (224, 224, 3), dtype=np.uint8)


def test_openpi_libero_and_droid_layouts(ws_url, make_customer, pi05_worker) -> None:
    """openpi's pi05_libero and pi05_droid examples send these keys; a pi05 model takes them unchanged."""
    key = make_customer("enterprise")[1]
    libero = WebsocketClientPolicy(host=f"{ws_url}/{MODEL}", api_key=key)
    meta = libero.get_server_metadata()
    assert meta["model"] == MODEL and meta["family"] == "pi05" and meta["chunk_length"] == 50
    out = libero.infer({"observation/image": _img(1), "observation/wrist_image": _img(2),
                        "observation/state": np.asarray(STATE), "prompt": "put the bowl on the plate"})
    assert out["actions"].shape == (50, 7) and np.isfinite(out["actions"]).all()
    droid = WebsocketClientPolicy(host=f"{ws_url}/{MODEL}?mapping=droid", api_key=key)
    out = droid.infer({"observation/exterior_image_1_left": _img(3), "observation/wrist_image_left": _img(4),
                       "observation/joint_position": np.zeros(7), "observation/gripper_position": np.array([0.5]),
                       "prompt": "pick up the marker"})
    assert out["actions"].shape == (50, 7)
    with pytest.raises(RuntimeError, match="422 invalid_state"):  # ALOHA's 14-D state does not fit
        libero.infer({"images": {"cam_high": np.moveaxis(_img(5), -1, 0)}, "state": np.zeros(14), "prompt": "x"})


def test_replay_is_seeded(client, headers, data_root, pi05_worker) -> None:
    """A flow policy declares its seed option: two replays of one dataset give the same chunks."""
    path, total = write_dataset("npz", data_root.dir, episodes=1, steps=3, state_dim=8)
    runs = []
    for _ in range(2):
        resp = client.post("/v1/replays", json={"model": MODEL, "dataset": {"path": data_root.rel(path)}},
                           headers=headers)
        assert resp.status_code == 202, resp.get_json()
        done = poll_replay(client, headers, resp.get_json()["id"])
        assert done["state"] == "succeeded" and done["progress"]["done_steps"] == total, done
        rows = client.get(f"/v1/replays/{done['id']}/results?format=jsonl", headers=headers).get_data(as_text=True)
        runs.append([json.loads(line)["predicted_action"] for line in rows.splitlines()])
    assert np.asarray(runs[0][0]).shape == (7,)  # a replay row holds the chunk's first action
    # Equal up to batch-shape rounding (the steps may batch differently); unseeded noise would move them by O(1).
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5, rtol=0)


def test_models_list_without_it_enabled(live_url, make_customer) -> None:
    """Not in ENABLED_MODELS: not listed (configuration alone decides)."""
    key = make_customer("enterprise")[1]
    models = requests.get(f"{live_url}/v1/models/list", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert MODEL not in {m["name"] for m in models.json()["models"]}


def test_rest_real_time_chunking(client, headers, pi05_worker) -> None:
    """The rtc field on a pi0.5 model: listed as supported, and the guided chunk continues the executing one."""
    models = {m["name"]: m for m in client.get("/v1/models/list", headers=headers).get_json()["models"]}
    assert models[MODEL]["real_time_chunking"]

    def act(seed: int, **extra) -> np.ndarray:
        resp = client.post("/v1/inference", json=_body(seed=seed, **extra), headers=headers)
        assert resp.status_code == 200, resp.get_json()
        return np.asarray(resp.get_json()["action"]["values"])

    prev = act(1)[10:]
    plain, guided = act(2), act(2, rtc={"prev_actions": prev.tolist(), "inference_delay": 3})
    gap = lambda chunk: float(np.abs(chunk[:3] - prev[:3]).max())  # noqa: E731
    assert gap(guided) * 4 < gap(plain), (gap(guided), gap(plain))
    bad = client.post("/v1/inference", json=_body(rtc={"prev_actions": prev[:, :3].tolist(), "inference_delay": 3}),
                      headers=headers)
    assert bad.status_code == 422 and "prev_actions" in json.dumps(bad.get_json())
