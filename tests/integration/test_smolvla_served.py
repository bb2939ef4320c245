"""SmolVLA served end to end (issue 25): smolvla-tiny on a real GPU worker process behind the real web app,
PostgreSQL and Redis; REST, the openpi websocket door and replays, with nothing SmolVLA-specific in web/,
workers/stages or workers/gpu (the policy's spec declares its cameras, state, chunk and options)."""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from PIL import Image

from tests.conftest import TEST_MODEL_DIR
from tests.helpers import png_b64, request_body
from tests.integration.live import free_port, serve
from tests.integration.replay_helpers import poll_replay, write_dataset
from tests.integration.workers import gpu_worker, wait_ready
from workers.policies.base import Observation

MODEL = "smolvla-tiny"


def _enabled(settings) -> str:
    return f"{settings.enabled_models},{MODEL}"


@pytest.fixture(scope="module")
def smolvla_worker(redis_client, log_dir, settings, workers):
    """The session's safety worker (from `workers`) and a GPU worker for smolvla-tiny."""
    from workers.policies.fingerprint import FILE_NAME
    from workers.policies.presets import build_tiny_checkpoints

    if not (TEST_MODEL_DIR / MODEL / FILE_NAME).exists():
        build_tiny_checkpoints(TEST_MODEL_DIR, [MODEL])
    proc = gpu_worker(MODEL, log_dir, ENABLED_MODELS=_enabled(settings)).start()
    try:
        wait_ready(redis_client, MODEL, worker=proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(settings):
    from web.app import create_app

    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, enabled_models=_enabled(settings))})
    return app.test_client()


@pytest.fixture(scope="module")
def local_policy():
    """The same checkpoint in this process, to check what the service returned."""
    from workers.policies.smolvla.policy import SmolVLAPolicy

    return SmolVLAPolicy.load(MODEL, TEST_MODEL_DIR / MODEL, dtype="float32", device="cpu")


def _decode(b64: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _body(**overrides) -> dict:
    images = {"camera1": png_b64(96, 128), "camera3": png_b64(80, 80, seed=1)}
    fields = {"image": None, "images": images, "instruction": "pick up the cup", "state": [0.1 * i for i in range(8)],
              "seed": 3, "safety": {"mode": "monitor"}, **overrides}
    return request_body(MODEL, **fields)


def test_listed_with_its_spec(client, headers, smolvla_worker):
    models = {m["name"]: m for m in client.get("/v1/models/list", headers=headers).get_json()["models"]}
    listed = models[MODEL]
    assert listed["ready"] and listed["family"] == "smolvla" and listed["chunk_length"] == 50
    assert listed["cameras"] == ["camera1", "camera2", "camera3"] and listed["state_dim"] == 8
    assert listed["request_options"] == ["seed", "rtc"] and listed["real_time_chunking"] is True
    assert listed["action_space"]["dimensions"] == 7


def test_rest_inference_is_the_policys_chunk(client, headers, smolvla_worker, local_policy):
    body = _body()
    resp = client.post("/v1/inference", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    action = resp.get_json()["action"]
    assert action["chunk_length"] == 50 and action["dimensions"] == 7
    obs = Observation(images={c: _decode(v) for c, v in body["images"].items()}, instruction=body["instruction"],
                      state=np.asarray(body["state"]), options={"seed": 3})
    np.testing.assert_allclose(action["values"], local_policy.predict([obs])[0].actions, rtol=0, atol=1e-6)
    again = client.post("/v1/inference", json=_body(seed=4), headers=headers).get_json()["action"]["values"]
    assert np.abs(np.asarray(again) - np.asarray(action["values"])).max() > 1e-4  # the seed reaches the noise


def test_rest_real_time_chunking(client, headers, smolvla_worker, local_policy):
    """The executing chunk's remainder and the delay ride along; the answer is the policy's guided chunk."""
    body = _body()
    first = client.post("/v1/inference", json=body, headers=headers).get_json()["action"]["values"]
    rtc = {"prev_actions": first[10:20], "inference_delay": 2, "jacobian": "identity"}
    resp = client.post("/v1/inference", json=_body(seed=9, rtc=rtc), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    guided = np.asarray(resp.get_json()["action"]["values"])
    obs = Observation(images={c: _decode(v) for c, v in body["images"].items()}, instruction=body["instruction"],
                      state=np.asarray(body["state"]), options={"seed": 9, "rtc": rtc})
    np.testing.assert_allclose(guided, local_policy.predict([obs])[0].actions, rtol=0, atol=1e-6)
    bad = client.post("/v1/inference", json=_body(rtc={"prev_actions": [[0.0] * 3], "inference_delay": 1}),
                      headers=headers)
    assert bad.status_code == 422 and "prev_actions" in json.dumps(bad.get_json())


@pytest.mark.parametrize("change,field", [({"state": None}, "state"), ({"state": [0.0] * 5}, "state"),
                                          ({"images": {"base_0_rgb": png_b64()}}, "images"),
                                          ({"images": {"camera1": png_b64(1, 1200)}}, "images.camera1")])
def test_bad_input_is_a_clear_422(client, headers, smolvla_worker, change, field):
    resp = client.post("/v1/inference", json={**_body(), **change}, headers=headers)
    doc = resp.get_json()
    assert resp.status_code == 422, doc
    assert field in json.dumps(doc) and doc["request_id"]


def test_openpi_websocket(settings, make_customer, smolvla_worker, tmp_path):
    port = free_port()
    env = {"ENABLED_MODELS": _enabled(settings)}
    with serve(["web.compat.openpi", "--port", str(port)], port, tmp_path / "ws.log", env=env):
        policy = WebsocketClientPolicy(host=f"ws://127.0.0.1:{port}/v1/openpi/{MODEL}",
                                       api_key=make_customer("enterprise")[1])
        meta = policy.get_server_metadata()
        assert meta["model"] == MODEL and meta["family"] == "smolvla" and meta["chunk_length"] == 50
        rng = np.random.default_rng(0)
        obs = {"observation/image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
               "observation/wrist_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
               "observation/state": np.linspace(-0.5, 0.5, 8), "prompt": "put the bowl on the plate"}
        out = policy.infer(obs)
        assert out["actions"].shape == (50, 7) and np.isfinite(out["actions"]).all()


def test_replay_is_seeded_and_served(client, headers, data_root, smolvla_worker):
    path, total = write_dataset("npz", data_root.dir, episodes=1, steps=3, state_dim=8)
    runs = []
    for _ in range(2):
        body = {"model": MODEL, "dataset": {"path": data_root.rel(path)}}
        resp = client.post("/v1/replays", json=body, headers=headers)
        assert resp.status_code == 202, resp.get_json()
        done = poll_replay(client, headers, resp.get_json()["id"])
        assert done["state"] == "succeeded" and done["progress"]["done_steps"] == total, done
        rows = client.get(f"/v1/replays/{done['id']}/results?format=jsonl", headers=headers).get_data(as_text=True)
        runs.append([json.loads(line)["predicted_action"] for line in rows.splitlines()])
    # The same seeds give the same chunks; the micro-batcher may group the steps differently in the two runs,
    # and float32 GEMMs of another batch shape round differently (~1e-8), so equal within 1e-6, not bitwise.
    assert len(runs[0]) == total
    np.testing.assert_allclose(np.asarray(runs[0], dtype=float), np.asarray(runs[1], dtype=float), rtol=0, atol=1e-6)
    assert np.abs(np.diff(np.asarray(runs[0], dtype=float), axis=0)).max() > 1e-4  # the steps differ from each other
