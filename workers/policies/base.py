"""The one policy interface every backend implements.

A policy is a plain library object: no Celery, no web. The GPU worker's micro-batcher validates each
observation on its own (so one bad request fails only its own job) and then calls `predict` on the
validated batch.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.policies.errors import PolicyInputError


@dataclass
class Observation:
    """One request's input. Images are HxWx3 uint8 arrays keyed by camera name."""

    images: dict[str, np.ndarray]
    instruction: str
    state: np.ndarray | None = None
    # Per-request options, e.g. {"unnorm_key": "bridge_orig"} or {"seed": 0} for pi0's noise.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyResult:
    """One observation's output: an action chunk of shape (T, D), T = 1 for single-step models."""

    actions: np.ndarray
    action_type: str
    units: list[str]
    timings_ms: dict[str, float]
    unnorm_key: str | None = None


@dataclass
class PolicySpec:
    """What a policy tells the world about itself (served by GET /v1/models/list)."""

    name: str
    family: str  # "openvla" | "pi0" | "pi05" | "smolvla"
    action_dim: int
    chunk_length: int
    cameras: list[str]
    unnorm_keys: list[str]
    default_unnorm_key: str | None
    action_type: str
    units: list[str]
    state_dim: int | None
    dtype: str
    device: str
    simulated: bool = False  # the sim backend (workers/policies/sim.py): no model behind the actions
    # A flow policy sampled through workers/policies/flow_sampling.py: accepts options["rtc"] (real-time
    # chunking); the web refuses the field for a model that does not declare it.
    real_time_chunking: bool = False
    # The per-request options it reads (Observation.options keys): "seed" for the flow policies' noise,
    # "rtc" for real-time chunking, "unnorm_key" for OpenVLA. Callers such as the replay driver go by this,
    # not by the family's name.
    request_options: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Policy(abc.ABC):
    """Base class: validate one observation, predict a batch of validated ones."""

    spec: PolicySpec

    def validate(self, obs: Observation) -> None:
        """Raise a PolicyInputError subclass if `obs` cannot be served by this policy."""
        if not isinstance(obs.options, dict):
            raise PolicyInputError("options", "options must be a mapping (e.g. {'unnorm_key': ...})")
        if "rtc" in obs.options and not self.spec.real_time_chunking:
            raise PolicyInputError("rtc", f"{self.spec.family} is not a flow policy: real-time chunking is served for "
                                   "flow policies only")
        if not isinstance(obs.instruction, str) or not obs.instruction.strip():
            raise PolicyInputError("instruction", "instruction must be a non-empty string")
        missing = [c for c in self.spec.cameras[:1] if c not in obs.images]
        if missing:
            raise PolicyInputError("images", f"missing camera(s) {missing}; expected {self.spec.cameras}")
        unknown = sorted(set(obs.images) - set(self.spec.cameras))
        if unknown:
            raise PolicyInputError("images", f"unknown camera(s) {unknown}; expected {self.spec.cameras}")
        for cam, img in obs.images.items():
            check_image(f"images.{cam}", img)

    def self_check(self) -> None:  # noqa: B027 - optional: wrappers and test doubles have nothing to check
        """Raise PolicySelfCheckError if the serving path disagrees with its reference computation.
        Every backend overrides it (OpenVLA, pi0); the worker calls it before it reports ready."""

    @abc.abstractmethod
    def predict(self, observations: list[Observation]) -> list[PolicyResult]:
        """Run one batched forward pass over already validated observations."""


def check_image(field_name: str, img: Any) -> None:
    if not isinstance(img, np.ndarray):
        raise PolicyInputError(field_name, "image must be a numpy array")
    if img.dtype != np.uint8:
        raise PolicyInputError(field_name, f"image dtype must be uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise PolicyInputError(field_name, f"image must have shape (H, W, 3), got {tuple(img.shape)}")
