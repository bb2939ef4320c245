"""An unsupported transformers is refused before any backend is imported, naming the supported range."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import transformers

from workers.policies.errors import PolicyError
from workers.policies.hf_compat import SUPPORTED_TRANSFORMERS, require_supported_transformers
from workers.policies.registry import load_policy

ROOT = Path(__file__).resolve().parents[3]


def test_range_is_setup_cfgs() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pins = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    assert f"transformers{SUPPORTED_TRANSFORMERS}" in pins


@pytest.mark.parametrize("version", ["5.17.2", "4.57.1", "5.25.0", "6.0.0", "not-a-version"])
def test_outside_the_range_is_refused_with_the_range(version: str) -> None:
    with pytest.raises(PolicyError, match=r"needs transformers>=5\.18\.0,<5\.25"):
        require_supported_transformers(version)


def test_the_installed_one_and_the_bounds_pass() -> None:
    for version in (transformers.__version__, "5.18.0", "5.24.9", "5.24.0.dev0"):
        require_supported_transformers(version)


def test_load_policy_refuses_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before the checkpoint is even looked for: the message is the range, not an ImportError."""
    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    with pytest.raises(PolicyError, match="5.17.0 is not supported"):
        load_policy("openvla-tiny", tmp_path / "nowhere", model_dir=tmp_path)
