"""The load-time self-check passes on a correct policy and catches a decode that lost its KV cache (what
transformers <= 5.23 did with `cache=`: the argument vanished and each step saw only its own token)."""
from __future__ import annotations

from pathlib import Path

import pytest

from workers.policies.errors import PolicySelfCheckError
from workers.policies.openvla import decode, policy, static_decode
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.pi0 import Pi0Policy
from workers.policies.registry import load_policy


def test_self_checks_pass(openvla: OpenVLAPolicy, pi0: Pi0Policy) -> None:
    openvla.self_check()
    pi0.self_check()


def _dynamic_without_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "bucket_for", lambda n: None)  # serve through the dynamic-cache path
    monkeypatch.setattr(decode, "cache_kwarg", lambda module, cache: {})  # the cache never reaches the model


def test_lost_cache_is_caught(openvla: OpenVLAPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    _dynamic_without_cache(monkeypatch)
    with pytest.raises(PolicySelfCheckError) as err:
        openvla.self_check()
    assert err.value.check in ("cached decode = full recompute", "batched decode = full recompute")
    assert "tolerance" in str(err.value)


def test_static_step_without_positions_is_caught(openvla: OpenVLAPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static_decode, "apply_rotary_pos_emb", lambda q, k, cos, sin: (q, k))
    with pytest.raises(PolicySelfCheckError):
        openvla.self_check()


def test_load_policy_runs_the_check(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dynamic_without_cache(monkeypatch)
    with pytest.raises(PolicySelfCheckError):
        load_policy("openvla-tiny", None, model_dir=tiny_dir, dtype="float32", device="cpu")


def test_check_runs_without_a_default_unnorm_key(tiny_dir: Path, tmp_path: Path) -> None:
    """openvla-7b has many datasets and no default_unnorm_key: the check must name one itself."""
    import json
    import shutil

    ckpt = tmp_path / "no-default"
    shutil.copytree(tiny_dir / "openvla-tiny", ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.pop("default_unnorm_key")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    loaded = OpenVLAPolicy.load("no-default", ckpt, dtype="float32", device="cpu")
    assert loaded.spec.default_unnorm_key is None
    loaded.self_check()
