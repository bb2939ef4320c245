"""A simulated GPU: a policy whose forward pass of a batch of n takes a + b·n seconds and returns actions of
the real shapes (OpenVLA: 1×7 end-effector deltas; pi0: a 50×7 chunk). For studying batching, admission and
fleets at scales this machine cannot run; never for robots.

Refused unless VLAAPI_ENV=development or VLAAPI_BENCHMARK=1 (workers/gpu/runtime.py passes `allow`), and
labelled everywhere: its spec says `simulated: true` (GET /v1/models/list), and every result's
model_timings_ms carries `simulated_ms` (REST, jobs, the openpi door's policy_timing).

The pass sleeps: a sleeping thread releases the GIL as a thread waiting on a CUDA kernel does, so the rest of
the worker (task threads, heartbeat, decode) behaves as beside a real GPU. The default curves (ms):
- openvla: 84.6 + 5.43·n, through the measured H100 figures 90 ms (n=1) and 128 ms (n=8) of OpenVLA-7B with a
  static cache and a CUDA-graphed decode step (../shared/reference/serving-anchors.md, docs/benchmarks.md);
- pi0: 50 + 10·n, an assumption inside the 40–80 ms per chunk H100 estimate (no batched pi0 figure is
  measured yet).
ENABLED_MODELS options override them: `?a_ms=..&b_ms=..&scale=..` (scale multiplies both: a 2-core machine
runs the fleet benchmark 10× slower in every time constant so the web and broker are not what it measures).
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Mapping

import numpy as np

from workers.policies.base import Observation, Policy, PolicyResult, PolicySpec
from workers.policies.common import EE_DELTA_UNITS
from workers.policies.errors import CheckpointError

# family -> (a_ms, b_ms, chunk_length, cameras)
PRESETS: dict[str, tuple[float, float, int, list[str]]] = {
    "openvla": (84.571, 5.429, 1, ["primary"]),
    "pi0": (50.0, 10.0, 50, ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]),
}
NAMES = {"openvla-7b-sim": "openvla", "pi0-sim": "pi0"}  # bare names in ENABLED_MODELS
OPTIONS = ("a_ms", "b_ms", "scale")
REFUSED = ("the sim policy is a simulated GPU for benchmarks and development: set VLAAPI_ENV=development or "
           "VLAAPI_BENCHMARK=1 to load it (never for robots)")


def sim_family(name: str, path: object) -> str | None:
    """The family a sim model simulates: bare names, or NAME=sim:<family> in ENABLED_MODELS; else None."""
    text = str(path) if path is not None else ""
    if text.startswith("sim:"):
        return text[4:]
    return NAMES.get(name) if path is None else None


class SimPolicy(Policy):
    def __init__(self, name: str, family: str, a_s: float, b_s: float):
        if family not in PRESETS:
            raise CheckpointError(f"unknown sim family {family!r}; known: {sorted(PRESETS)}")
        _, _, chunk, cameras = PRESETS[family]
        self.a_s, self.b_s = a_s, b_s
        self.spec = PolicySpec(
            name=name, family=family, action_dim=7, chunk_length=chunk, cameras=cameras,
            unnorm_keys=["bridge_orig"] if family == "openvla" else [],
            default_unnorm_key="bridge_orig" if family == "openvla" else None,
            action_type="ee_delta", units=list(EE_DELTA_UNITS), state_dim=7 if family == "pi0" else None,
            dtype="simulated", device="simulated", simulated=True,
            request_options=["unnorm_key"] if family == "openvla" else ["seed"],
        )

    @classmethod
    def load(cls, name: str, family: str, *, allow: bool, options: Mapping[str, str] | None = None) -> SimPolicy:
        if not allow:
            raise CheckpointError(f"model {name!r}: {REFUSED}")
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise CheckpointError(f"unknown sim option(s) {unknown}; known: {list(OPTIONS)}")
        a_ms, b_ms, _, _ = PRESETS.get(family, (0.0, 0.0, 1, []))
        try:
            scale = float(opts.get("scale", 1.0))
            a_ms, b_ms = float(opts.get("a_ms", a_ms)), float(opts.get("b_ms", b_ms))
        except ValueError as exc:
            raise CheckpointError(f"sim options must be numbers: {exc}") from None
        if scale <= 0 or a_ms < 0 or b_ms < 0:
            raise CheckpointError("sim options: scale > 0, a_ms >= 0 and b_ms >= 0")
        return cls(name, family, a_ms * scale / 1e3, b_ms * scale / 1e3)

    def forward_s(self, n: int) -> float:
        return self.a_s + self.b_s * n

    def curve_text(self) -> str:
        return f"{self.spec.name}: simulated forward pass = {self.a_s * 1e3:.2f} + {self.b_s * 1e3:.3f}·n ms"

    def predict(self, observations: list[Observation]) -> list[PolicyResult]:
        took = self.forward_s(len(observations))
        time.sleep(took)  # releases the GIL, as waiting on a GPU kernel does
        return [self._result(obs, took * 1e3) for obs in observations]

    def _result(self, obs: Observation, took_ms: float) -> PolicyResult:
        # Small, safe, deterministic per instruction: the shape and dtype are what matter here.
        rng = np.random.default_rng(zlib.crc32(obs.instruction.encode()))
        actions = rng.uniform(-0.005, 0.005, size=(self.spec.chunk_length, 7))
        actions[:, 6] = 0.5
        return PolicyResult(actions=actions, action_type="ee_delta", units=list(self.spec.units),
                            timings_ms={"simulated_ms": took_ms}, unnorm_key=self.spec.default_unnorm_key)
