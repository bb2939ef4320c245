"""Tiny checkpoints are built once per session into a temp dir and loaded through the real loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers.policies.base import Observation
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy
from workers.policies.presets import build_tiny_checkpoints


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    root = tmp_path_factory.mktemp("models")
    build_tiny_checkpoints(root)
    return root


@pytest.fixture(scope="session")
def openvla(tiny_dir: Path) -> OpenVLAPolicy:
    return OpenVLAPolicy.load("openvla-tiny", tiny_dir / "openvla-tiny", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def pi0(tiny_dir: Path) -> Pi0Policy:
    return Pi0Policy.load("pi0-tiny", tiny_dir / "pi0-tiny", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def make_image():
    return image


@pytest.fixture(scope="session")
def make_vla_obs():
    return vla_obs


@pytest.fixture(scope="session")
def make_pi0_obs():
    return pi0_obs


def image(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def vla_obs(img_seed: int = 0, instruction: str = "pick up the red block", **options) -> Observation:
    return Observation(images={"primary": image(img_seed)}, instruction=instruction, options=dict(options))


def pi0_obs(img_seed: int = 0, cams: tuple[str, ...] = ("base_0_rgb",), instruction: str = "pick up the cup",
            **options) -> Observation:
    state = np.linspace(-1.0, 1.0, 8) + img_seed
    return Observation(images={c: image(img_seed + i, 200 + 10 * i, 300) for i, c in enumerate(cams)},
                       instruction=instruction, state=state, options=dict(options))
