"""The peers of ops/bench/peers.py, each serving the project's own tiny policy object in one process:

    python -m ops.bench.peer_servers openpi --port P --model pi0-tiny \\
        (--openpi-server-path .../openpi/src/openpi/serving/websocket_policy_server.py | --openpi-server-module M)
    python -m ops.bench.peer_servers deploy --port P --model openvla-tiny

`openpi`: openpi's own `WebsocketPolicyServer`, loaded from the file or module given (fetched by whoever runs
the bench; it needs only openpi-client and websockets, both installed here), around a `BasePolicy` that maps
openpi's libero/droid observation onto our Observation and returns the chunk, as openpi's policies do.
`deploy`: a server built the way OpenVLA's `vla-scripts/deploy.py` is: FastAPI with `json_numpy.patch()`,
a synchronous `/act` (so FastAPI runs it in its thread pool), uvicorn, the action returned as a json-numpy
array. No key, no limits, no queue, no safety stage: what a user who leaves us runs next to the robot.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from typing import Any

import numpy as np

from workers.policies.base import Observation, Policy

# openpi's published layouts: (first image, second image, state keys)
_LAYOUTS = (("observation/image", "observation/wrist_image", ("observation/state",)),
            ("observation/exterior_image_1_left", "observation/wrist_image_left",
             ("observation/joint_position", "observation/gripper_position")))


def load_policy(model: str) -> Policy:
    """The policy object our GPU worker serves, loaded with the same settings (dtype, device, options, torch
    threads on a CPU host: workers/gpu/runtime.py), so the peer and we run the very same model."""
    from workers.policies.devices import resolve_device
    from workers.policies.registry import load_policy as load
    from workers.policies.registry import parse_model_options
    from workers.settings import get_settings

    s = get_settings()
    if s.torch_cpu_threads > 0 and resolve_device(s.gpu_device).type == "cpu":
        import torch

        torch.set_num_threads(s.torch_cpu_threads)
    options = parse_model_options(s.enabled_models).get(model) or {}
    return load(model, None, model_dir=s.model_dir, dtype=s.model_dtype, device=s.gpu_device, options=options)


def openpi_observation(policy: Policy, obs: dict[str, Any]) -> Observation:
    cams = policy.spec.cameras
    for first, second, state_keys in _LAYOUTS:
        if first in obs:
            images = {cams[0]: obs[first], **({cams[1]: obs[second]} if second in obs and len(cams) > 1 else {})}
            state = np.concatenate([np.atleast_1d(np.asarray(obs[k], dtype=np.float64)) for k in state_keys
                                    if k in obs]) if any(k in obs for k in state_keys) else None
            return Observation(images=images, instruction=str(obs.get("prompt", "")), state=state)
    raise KeyError("no openpi image key in the observation")


def serve_openpi(args: argparse.Namespace) -> None:
    from openpi_client import base_policy

    if args.openpi_server_path:
        spec = importlib.util.spec_from_file_location("openpi_websocket_policy_server", args.openpi_server_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(args.openpi_server_module)
    policy = load_policy(args.model)

    class Served(base_policy.BasePolicy):
        def infer(self, obs: dict) -> dict:
            return {"actions": policy.predict([openpi_observation(policy, obs)])[0].actions}

    metadata = {"model": args.model, "action_dim": policy.spec.action_dim, "chunk_length": policy.spec.chunk_length}
    module.WebsocketPolicyServer(Served(), host="127.0.0.1", port=args.port, metadata=metadata).serve_forever()


def serve_deploy(args: argparse.Namespace) -> None:
    import json_numpy

    json_numpy.patch()  # as deploy.py does: FastAPI's json.loads/dumps then carry numpy arrays
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    policy = load_policy(args.model)
    camera = policy.spec.cameras[0]

    def act(payload: dict[str, Any]) -> JSONResponse:  # a plain def: FastAPI runs it in its thread pool
        if "encoded" in payload:  # deploy.py's double-encoded form
            payload = json.loads(payload["encoded"])
        options = {"unnorm_key": payload["unnorm_key"]} if payload.get("unnorm_key") else {}
        obs = Observation(images={camera: np.asarray(payload["image"], dtype=np.uint8)},
                          instruction=payload["instruction"], options=options)
        return JSONResponse(policy.predict([obs])[0].actions[0])

    app = FastAPI()
    app.post("/act")(act)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=("openpi", "deploy"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--openpi-server-path")
    ap.add_argument("--openpi-server-module", default="openpi.serving.websocket_policy_server")
    args = ap.parse_args()
    (serve_openpi if args.which == "openpi" else serve_deploy)(args)


if __name__ == "__main__":
    main()
