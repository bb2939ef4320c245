"""How a fleet robot reaches the service: POST /v1/inference (REST) or the openpi websocket door, each sending
one observation and turning what comes back into an Answer, refusals as the Python client's typed errors.

REST: the body carries the request's deadline_ms; a refusal becomes the error the client's own transport makes
of the response (vlaapi_client.transport.error_of: retry_after from the Retry-After header).
openpi: openpi-client's WebsocketClientPolicy, unchanged, on `/v1/openpi/<model>?deadline_ms=..`: openpi's
protocol carries no deadline per message, so the connection's is every request's; a refusal is a text frame
(the client raises it) whose last line is the problem document: retry_after from its retry_after_ms, since
the protocol has no headers.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from vlaapi_client.errors import VLAError, from_status
from vlaapi_client.transport import error_of

from ops.bench.common import png_b64, server_timing

INSTRUCTION = "pick up the red block"
ROBOT_TYPE = "widowx_250"


@dataclass
class Answer:
    status: int  # HTTP status, as the problem document says over openpi; 0: the service was not reached
    actions: np.ndarray | None = None  # (chunk, D)
    timings_ms: dict[str, float] = field(default_factory=dict)  # the job's model_timings_ms
    error: VLAError | None = None
    server_ms: float | None = None  # REST: the web's own time for the request (Server-Timing total)

    @property
    def code(self) -> str:
        return self.error.code if self.error is not None else ""


def _unreachable(exc: Exception) -> Answer:
    return Answer(0, error=from_status(0, {"type": type(exc).__name__, "detail": str(exc)[:200]}, None))


class RestDoor:
    transport = "rest"

    def __init__(self, url: str, key: str, model: str, cameras: list[str], state_dim: int | None, seed: int):
        self.url, self.session = f"{url}/v1/inference", requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        images = ({"image": png_b64(32, 32, seed)} if len(cameras) == 1 else
                  {"images": {cam: png_b64(32, 32, seed + k) for k, cam in enumerate(cameras[:2])}})
        self.body: dict[str, Any] = {"model": model, "instruction": INSTRUCTION, "robot_config": {"type": ROBOT_TYPE},
                                     **images, **({"state": [0.0] * state_dim} if state_dim else {})}

    def connect(self) -> None:
        pass

    def send(self, deadline_ms: int) -> Answer:
        try:
            resp = self.session.post(self.url, json={**self.body, "deadline_ms": deadline_ms},
                                     timeout=deadline_ms / 1e3 + 5)
            if resp.status_code != 200:
                return Answer(resp.status_code, error=error_of(resp),
                              server_ms=server_timing(resp.headers).get("total"))
            doc = resp.json()
        except (requests.RequestException, ValueError) as exc:
            return _unreachable(exc)
        values = np.asarray(doc["action"]["values"], dtype=np.float64)
        return Answer(200, values.reshape(1, -1) if values.ndim == 1 else values,
                      (doc.get("performance") or {}).get("model_timings_ms") or {})

    def close(self) -> None:
        self.session.close()


class OpenpiDoor:
    transport = "openpi"

    def __init__(self, ws_url: str, key: str, deadline_ms: int, state_dim: int | None, seed: int):
        self.uri = f"{ws_url}?deadline_ms={deadline_ms}&robot_type={ROBOT_TYPE}"
        self.key, self.deadline_ms, self.policy = key, deadline_ms, None
        rng = np.random.default_rng(seed)
        # openpi's LIBERO layout: the door maps it onto the model's first two cameras and its state
        self.obs: dict[str, Any] = {"observation/image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                    "observation/wrist_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                    "prompt": INSTRUCTION}
        if state_dim:
            self.obs["observation/state"] = np.zeros(state_dim, np.float32)

    def connect(self) -> None:
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        self.policy = WebsocketClientPolicy(host=self.uri, api_key=self.key)

    def send(self, deadline_ms: int) -> Answer:
        """`deadline_ms` is what the robot would ask for; the connection's deadline is the one that holds."""
        try:
            if self.policy is None:
                self.connect()
            out = self.policy.infer(self.obs)
        except RuntimeError as exc:  # openpi-client raises the server's text frame
            return _refusal(str(exc))
        except Exception as exc:  # a closed connection: reconnect on the next request, as a robot would
            self.policy = None
            return _unreachable(exc)
        return Answer(200, np.asarray(out["actions"], dtype=np.float64),
                      {k: float(v) for k, v in (out.get("policy_timing") or {}).items()})

    def close(self) -> None:
        if self.policy is not None:
            self.policy._ws.close()  # openpi-client has no close(); its connection is this attribute


def _refusal(text: str) -> Answer:
    try:
        problem = json.loads(text.rsplit("\n", 1)[-1])
        status = int(problem.get("status", 0))
    except (ValueError, AttributeError):
        return Answer(0, error=from_status(0, {"detail": text[:200]}, None))
    ms = problem.get("retry_after_ms")
    return Answer(status, error=from_status(status, problem, ms / 1e3 if isinstance(ms, int | float) else None))


def timed(door: RestDoor | OpenpiDoor, deadline_ms: int) -> tuple[Answer, float, float]:
    """(answer, sent at, seconds taken) on the monotonic clock."""
    sent = time.monotonic()
    answer = door.send(deadline_ms)
    return answer, sent, time.monotonic() - sent
