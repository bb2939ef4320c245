"""The sim policy (workers/policies/sim.py): refused outside development and benchmarks, labelled, real shapes."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from workers.gpu.runtime import GpuRuntime
from workers.policies.base import Observation
from workers.policies.errors import CheckpointError
from workers.policies.registry import load_policy


def obs(camera: str) -> Observation:
    return Observation(images={camera: np.zeros((8, 8, 3), np.uint8)}, instruction="pick up the block")


def test_refused_unless_allowed(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="VLAAPI_BENCHMARK=1"):
        load_policy("openvla-7b-sim", None, model_dir=tmp_path)


def test_runtime_refuses_it_in_production_and_loads_it_in_development(settings) -> None:
    prod = dataclasses.replace(settings, enabled_models="openvla-7b-sim", environment="production", sim_allowed=False)
    with pytest.raises(CheckpointError, match="simulated GPU"):
        GpuRuntime(prod, "openvla-7b-sim")._load()
    for allowed in (dataclasses.replace(prod, environment="development"), dataclasses.replace(prod, sim_allowed=True)):
        assert GpuRuntime(allowed, "openvla-7b-sim")._load().spec.simulated


@pytest.mark.parametrize(("name", "shape"), [("openvla-7b-sim", (1, 7)), ("pi0-sim", (50, 7))])
def test_real_shapes_labelled_and_the_curve_timed(tmp_path, name, shape) -> None:
    policy = load_policy(name, None, model_dir=tmp_path, allow_sim=True, options={"a_ms": "20", "b_ms": "10"})
    assert policy.spec.simulated and policy.spec.to_dict()["simulated"] is True
    o = obs(policy.spec.cameras[0])
    policy.validate(o)
    began = time.monotonic()
    results = policy.predict([o, o, o])
    took = time.monotonic() - began
    assert 0.050 <= took < 0.5  # 20 + 10·3 ms, on a loaded machine
    assert all(r.actions.shape == shape and r.timings_ms["simulated_ms"] == pytest.approx(50.0) for r in results)


def test_named_sim_model_and_bad_options(tmp_path) -> None:
    from pathlib import Path

    p = load_policy("robot-a", Path("sim:pi0"), model_dir=tmp_path, allow_sim=True, options={"scale": "10"})
    assert p.spec.family == "pi0" and p.forward_s(1) == pytest.approx(0.6)
    with pytest.raises(CheckpointError, match="unknown sim option"):
        load_policy("pi0-sim", None, model_dir=tmp_path, allow_sim=True, options={"speed": "2"})
