"""Shared by the golden tests: the tiny checkpoint a fixture was built on (or a clear failure), and a LeRobot
fixture's items as the service's observations."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops.golden.fixture import REGENERATE
from ops.golden.inputs import weights_digest
from tests.conftest import TEST_MODEL_DIR


def checked_model_dir(name: str, meta: dict[str, Any]) -> Path:
    path = TEST_MODEL_DIR / name
    have = weights_digest(path)
    if have != meta["weights_sha256"]:
        pytest.fail(f"{path} holds other weights than the golden fixture was built on (sha256 {have[:12]} vs "
                    f"{meta['weights_sha256'][:12]}). If workers/policies/tiny.py changed, regenerate: {REGENERATE}; "
                    f"if .data/test-models is stale, delete it so the suite rebuilds it.")
    return path


def tiny_layout(name: str) -> Path:
    """A pi0-tiny layout preset in .data/test-models, built there once if missing (like pi0-tiny itself), so
    `make test-tf-min` reuses what the highest transformers built: a toy model's random init follows the
    parameter order, which another transformers version may change."""
    from workers.policies.fingerprint import FILE_NAME
    from workers.policies.presets import build_tiny_checkpoints

    path = TEST_MODEL_DIR / name
    if not (path / FILE_NAME).exists():
        build_tiny_checkpoints(TEST_MODEL_DIR, [name])
    return path


def require_same_weights(policy: Any, reference: Any, what: str) -> None:
    """Fail (not a numeric mismatch later) when a layout preset holds other weights than pi0-tiny."""
    ours, ref = policy.model.state_dict(), reference.model.state_dict()
    differ = [k for k in ref if k not in ours or not bool((ours[k] == ref[k]).all())]
    if differ:
        pytest.fail(f"{what} holds other weights than pi0-tiny ({len(differ)} tensors, e.g. {differ[0]}): delete "
                    f"{TEST_MODEL_DIR} so the suite rebuilds both with the same transformers")




def fixture_observations(golden: tuple, cameras: tuple[str, ...]) -> list:
    """Each item of a LeRobot fixture (arrays, meta, images; the images camera by camera per item, absent cameras
    left out) as an Observation with its instruction, state and noise seed."""
    from workers.policies.base import Observation

    arrays, _, images = golden
    out = []
    for n, instruction in enumerate(arrays["instructions"]):
        cams = {c: images[n * len(cameras) + i] for i, c in enumerate(cameras) if arrays[f"present_{c}"][n]}
        out.append(Observation(images=cams, instruction=str(instruction), state=arrays["state"][n],
                               options={"seed": int(arrays["seeds"][n])}))
    return out


def case_observation(golden: tuple, cameras: tuple[str, ...], c: int, rtc: dict | None) -> Any:
    """An RTC fixture's case `c` (its item, chunk B's noise seed) as an Observation, with `rtc` options if any."""
    from workers.policies.base import Observation

    arrays, _, images = golden
    n = int(arrays["case_item"][c])
    cams = {cam: images[n * len(cameras) + i] for i, cam in enumerate(cameras) if arrays[f"present_{cam}"][n]}
    options = {"seed": int(arrays["case_seed_b"][c])} | ({"rtc": rtc} if rtc else {})
    return Observation(images=cams, instruction=str(arrays["instructions"][n]), state=arrays["state"][n],
                       options=options)
