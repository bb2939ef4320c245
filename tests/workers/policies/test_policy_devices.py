from __future__ import annotations

import pytest
import torch

from workers.policies.devices import resolve_device, resolve_dtype
from workers.policies.errors import PolicyError


def test_auto_dtype_depends_on_device() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda:0")) is torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_bad_settings_raise() -> None:
    with pytest.raises(PolicyError, match="MODEL_DTYPE"):
        resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(PolicyError, match="GPU_DEVICE"):
        resolve_device("tpu")


def test_cpu_and_auto_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_explicit_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(PolicyError, match="CUDA is not available"):
        resolve_device("cuda:0")
