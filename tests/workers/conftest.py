"""Fixtures shared by the batcher tests: the real tiny OpenVLA policy and batchers over it."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from workers.gpu.batcher import MicroBatcher
from workers.policies import presets, registry
from workers.policies.base import Policy

MODEL = "openvla-tiny"
RESULT_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    model_dir = tmp_path_factory.mktemp("models")
    presets.build_tiny_checkpoints(model_dir, names=(MODEL,))
    return registry.load_policy(MODEL, None, model_dir=model_dir, dtype="float32", device="cpu")


@pytest.fixture
def make_batcher(policy: Policy) -> Iterator[Callable[..., MicroBatcher]]:
    """Build batchers over the shared policy; every one is stopped at teardown, even on failure."""
    made: list[MicroBatcher] = []

    def make(loader: Callable[[], Policy] | None = None, *, start: bool = True, **kwargs) -> MicroBatcher:
        kwargs = {"max_batch_size": 8, "max_wait_ms": 20.0, "name": MODEL, **kwargs}
        batcher = MicroBatcher(loader or (lambda: policy), **kwargs)
        made.append(batcher)
        if start:
            batcher.start()
            assert batcher.wait_ready(RESULT_TIMEOUT_S), batcher.error
        return batcher

    yield make
    for batcher in made:
        batcher.stop(timeout=RESULT_TIMEOUT_S, drain=False)
