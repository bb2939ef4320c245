"""Checkpoints prove themselves at load (issue 25): every corruption of a registered tiny checkpoint is refused
through the real loader with a message naming the tensor; a NaN or int8 tensor is refused even unregistered;
an unregistered checkpoint is refused in production and served with a warning in development."""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from workers.policies import fingerprint
from workers.policies.checkpoint import shard_files
from workers.policies.errors import CheckpointError, PolicySelfCheckError
from workers.policies.register import register
from workers.policies.registry import fingerprint_mode, load_policy

TENSOR = {"openvla-tiny": "language_model.model.layers.0.self_attn.q_proj.weight",
          "pi0-tiny": "model.dit.layers.0.mlp.down_proj.weight",
          "pi05-tiny": "model.paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight",
          "smolvla-tiny": "model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"}
Tensors = dict[str, torch.Tensor]


def _nan(t: Tensors, name: str) -> None:
    t[name] = t[name].clone()
    t[name].view(-1)[3] = float("nan")


CORRUPTIONS: dict[str, Callable[[Tensors, str], None]] = {
    "nan": _nan,
    "x1.01": lambda t, n: t.__setitem__(n, t[n] * 1.01),
    "x1.10": lambda t, n: t.__setitem__(n, t[n] * 1.10),
    "shuffled rows": lambda t, n: t.__setitem__(n, t[n].roll(1, dims=0)),
    "missing": lambda t, n: t.pop(n),
    "int8": lambda t, n: t.__setitem__(n, (t[n] * 10).to(torch.int8)),
    "file cast to bf16": lambda t, n: t.update({k: v.to(torch.bfloat16) for k, v in t.items()
                                                if v.is_floating_point()}),
}


def corrupt(src: Path, dst: Path, tensor: str, how: Callable[[Tensors, str], None]) -> Path:
    """A copy of `src` with the shard holding `tensor` rewritten after `how` (the fingerprint left as is)."""
    shutil.copytree(src, dst)
    for file in shard_files(dst):
        with safe_open(str(file), framework="pt") as f:
            if tensor not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                continue
        tensors = load_file(str(file))
        how(tensors, tensor)
        save_file(tensors, str(file), metadata={"format": "pt"})
        return dst
    raise AssertionError(f"{tensor} is in no shard of {src}")


def _load(path: Path, name: str, mode: str = "require", **kw):
    return load_policy(name, path, model_dir=path.parent, dtype="float32", device="cpu", fingerprints=mode, **kw)


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
@pytest.mark.parametrize("model", sorted(TENSOR))
def test_every_corruption_is_refused_naming_the_tensor(tiny_dir: Path, tmp_path: Path, model: str, how: str) -> None:
    tensor = TENSOR[model]
    bad = corrupt(tiny_dir / model, tmp_path / f"{model}-bad", tensor, CORRUPTIONS[how])
    with pytest.raises(CheckpointError) as err:
        _load(bad, model)
    message = str(err.value)
    if how == "file cast to bf16":  # every tensor of the shard differs; the message lists them with dtypes
        assert "(BF16" in message and "registered F32" in message, message
    else:
        assert tensor in message, message


@pytest.mark.parametrize("how", ["nan", "int8"])
@pytest.mark.parametrize("model", sorted(TENSOR))
def test_nan_and_int8_are_refused_unregistered(tiny_dir: Path, tmp_path: Path, model: str, how: str) -> None:
    bad = corrupt(tiny_dir / model, tmp_path / f"{model}-bad", TENSOR[model], CORRUPTIONS[how])
    (bad / fingerprint.FILE_NAME).unlink()
    with pytest.raises(CheckpointError, match=TENSOR[model].replace(".", r"\.")):
        _load(bad, model, mode="prefer")


def test_registered_checkpoints_load(tiny_dir: Path) -> None:
    for model in TENSOR:
        assert _load(tiny_dir / model, model).spec.name == model


def test_unregistered_refused_in_production_served_in_development(tiny_dir: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tmp_path / "openvla-copy"
    shutil.copytree(tiny_dir / "openvla-tiny", ckpt)
    (ckpt / fingerprint.FILE_NAME).unlink()
    assert fingerprint_mode("production", False) == "require"
    with pytest.raises(CheckpointError, match="not registered.*ALLOW_UNREGISTERED_CHECKPOINTS"):
        _load(ckpt, "openvla-copy", fingerprint_mode("production", False))
    with caplog.at_level(logging.WARNING):
        _load(ckpt, "openvla-copy", fingerprint_mode("development", False))
    assert "not registered" in caplog.text
    _load(ckpt, "openvla-copy", fingerprint_mode("production", True))


def test_fingerprint_dir_for_read_only_checkpoints(tiny_dir: Path, tmp_path: Path) -> None:
    """Registered elsewhere (FINGERPRINT_DIR/<dir name>.json); found there, and still refuses a changed copy."""
    ckpt, prints = tmp_path / "pi0-ro", tmp_path / "prints"
    shutil.copytree(tiny_dir / "pi0-tiny", ckpt)
    (ckpt / fingerprint.FILE_NAME).unlink()
    written = register(ckpt, fingerprint_dir=prints)
    assert written == prints / "pi0-ro.json" and not (ckpt / fingerprint.FILE_NAME).exists()
    _load(ckpt, "pi0-ro", fingerprint_dir=prints)
    shutil.rmtree(ckpt)
    corrupt(tiny_dir / "pi0-tiny", ckpt, TENSOR["pi0-tiny"], CORRUPTIONS["x1.01"])
    with pytest.raises(fingerprint.FingerprintMismatch, match="down_proj"):
        _load(ckpt, "pi0-ro", fingerprint_dir=prints)


def test_changed_file_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "pi0-stats"
    shutil.copytree(tiny_dir / "pi0-tiny", ckpt)
    stats = json.loads((ckpt / "norm_stats.json").read_text())
    stats["norm_stats"]["actions"]["std"][0] *= 2
    (ckpt / "norm_stats.json").write_text(json.dumps(stats))
    with pytest.raises(fingerprint.FingerprintMismatch, match="norm_stats.json"):
        _load(ckpt, "pi0-stats")


@pytest.mark.parametrize("model,field", [("openvla-tiny", "logits"), ("pi0-tiny", "actions")])
def test_registered_outputs_are_checked(tiny_dir: Path, tmp_path: Path, model: str, field: str) -> None:
    """The outputs gap is named: a fingerprint whose recorded outputs differ (another code path, another
    library) fails the self-check, never reports ready."""
    ckpt = tmp_path / f"{model}-copy"
    shutil.copytree(tiny_dir / model, ckpt)
    data = json.loads((ckpt / fingerprint.FILE_NAME).read_text())
    rec = data["outputs"][0]
    assert (rec["dtype"], rec["device"]) == ("float32", "cpu")
    rec[field] = (torch.tensor(rec[field]) + 0.5).tolist()
    (ckpt / fingerprint.FILE_NAME).write_text(json.dumps(data))
    with pytest.raises(PolicySelfCheckError, match="registered outputs.*differ"):
        _load(ckpt, model)


def test_register_keeps_other_dtype_records(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "pi0-two"
    shutil.copytree(tiny_dir / "pi0-tiny", ckpt)
    register(ckpt, dtype="bfloat16")
    records = fingerprint.read(ckpt / fingerprint.FILE_NAME)["outputs"]
    assert {(r["dtype"], r["device"]) for r in records} == {("float32", "cpu"), ("bfloat16", "cpu")}
    assert load_policy("pi0-two", ckpt, model_dir=tmp_path, dtype="bfloat16", device="cpu").spec.dtype == "bfloat16"


def test_nan_weight_fails_every_self_check(tiny_dir: Path) -> None:
    """Issue 25 item 1: with a NaN weight every OpenVLA logit is NaN and argmax still picks a token; the token
    comparison must fail on NaN (it tested `gap > tol`, false for NaN), and so must pi0's."""
    from workers.policies.openvla.policy import OpenVLAPolicy
    from workers.policies.pi0 import Pi0Policy

    vla = OpenVLAPolicy.load("openvla-tiny", tiny_dir / "openvla-tiny", dtype="float32", device="cpu")
    with torch.no_grad():
        vla.model.language_model.model.norm.weight[0] = float("nan")
    with pytest.raises(PolicySelfCheckError):
        vla.self_check()
    pi0 = Pi0Policy.load("pi0-tiny", tiny_dir / "pi0-tiny", dtype="float32", device="cpu")
    with torch.no_grad():
        pi0.model.action_out_proj.weight[0, 0] = float("nan")
    with pytest.raises(PolicySelfCheckError):
        pi0.self_check()


def test_cli_register(tiny_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ops.cli import main

    ckpt = tmp_path / "openvla-cli"
    shutil.copytree(tiny_dir / "openvla-tiny", ckpt)
    out = tmp_path / "elsewhere" / "openvla-cli.json"
    result = CliRunner().invoke(main, ["models", "register", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert fingerprint.read(out)["tensors"] == fingerprint.read(ckpt / fingerprint.FILE_NAME)["tensors"]
