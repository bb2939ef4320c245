"""Shared by the golden tests: the tiny checkpoint a fixture was built on, or a clear failure."""
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
