"""The static-KV-cache decode (issue 15) equals the dynamic-cache decode exactly in fp32 on CPU, for every
bucket a batch lands in; on CUDA the captured graph equals the eager static step (gpu marker)."""
from __future__ import annotations

import pytest
import torch

from workers.policies.openvla.decode import greedy_decode, splice_inputs
from workers.policies.openvla.policy import OpenVLAPolicy
from workers.policies.openvla.static_decode import BUCKETS, StaticDecodePool, bucket_for, capacity_for

TEXTS = ["pick up the red block", "open the drawer slowly then close it again", "wipe",
         "put the spoon on the towel near the sink"]


def _inputs(policy: OpenVLAPolicy, make_vla_obs, n: int):
    obs = [make_vla_obs(i, TEXTS[i % len(TEXTS)]) for i in range(n)]
    pixels = torch.stack([policy.pixels(o.images["primary"]) for o in obs]).to(policy.device, policy.dtype)
    patches = policy.model.encode_images(pixels)
    return splice_inputs(policy.model, patches, [policy.prompt_ids(o.instruction) for o in obs])


def test_buckets() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 9, 16, 17)] == [1, 2, 4, 8, 16, 16, None]
    assert capacity_for(1) == capacity_for(128) < capacity_for(129)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_static_equals_dynamic_fp32(openvla: OpenVLAPolicy, make_vla_obs, n: int) -> None:
    embeds, mask, positions = _inputs(openvla, make_vla_obs, n)
    allowed = openvla._allowed_ids()
    dynamic = greedy_decode(openvla.model, embeds, mask, positions, 7, allowed)
    pool = StaticDecodePool(openvla.model)
    static = pool.decode(embeds, mask, positions, 7, allowed)
    assert torch.equal(static, dynamic)
    assert len({tuple(r) for r in dynamic.tolist()}) > 1 or n == 1  # rows really differ
    # Unrestricted argmax (allowed=None) takes the same path.
    assert torch.equal(pool.decode(embeds, mask, positions, 7, None),
                       greedy_decode(openvla.model, embeds, mask, positions, 7, None))


def test_decoder_is_reused_and_reloaded(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    pool = StaticDecodePool(openvla.model)
    allowed = openvla._allowed_ids()
    first = _inputs(openvla, make_vla_obs, 3)
    second = _inputs(openvla, make_vla_obs, 4)  # same bucket (4), different prompts and lengths
    a = pool.decode(*first, 7, allowed)
    b = pool.decode(*second, 7, allowed)
    assert len(pool.decoders) == 1
    assert torch.equal(a, greedy_decode(openvla.model, *first, 7, allowed))
    assert torch.equal(b, greedy_decode(openvla.model, *second, 7, allowed))


def test_policy_serves_above_the_largest_bucket(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    batch = [make_vla_obs(i % 4, TEXTS[i % len(TEXTS)]) for i in range(BUCKETS[-1] + 1)]
    together = openvla.predict(batch)  # the dynamic path
    assert [r.actions.tolist() for r in together[:4]] == [r.actions.tolist() for r in openvla.predict(batch[:4])]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_equals_eager_static(tiny_dir, make_vla_obs) -> None:
    policy = OpenVLAPolicy.load("openvla-tiny", tiny_dir / "openvla-tiny", dtype="float32", device="cuda")
    allowed = policy._allowed_ids()
    for n in (1, 3, 8):
        inputs = _inputs(policy, make_vla_obs, n)
        graphed = StaticDecodePool(policy.model, use_graphs=True)
        eager = StaticDecodePool(policy.model, use_graphs=False)
        a, b = graphed.decode(*inputs, 7, allowed), eager.decode(*inputs, 7, allowed)
        assert all(d.graph is not None for d in graphed.decoders.values())
        assert torch.equal(a, b)
        assert torch.equal(graphed.decode(*inputs, 7, allowed), a)  # replay after reload


def test_concurrent_predicts_take_turns_on_the_shared_decoder(openvla: OpenVLAPolicy, make_vla_obs) -> None:
    """The service calls predict from one owner thread, but a library user (or the benchmark's naive anchor)
    may call it from many: the shared static buffers must not be clobbered (found by ops/bench/pipeline.py)."""
    from concurrent.futures import ThreadPoolExecutor

    obs = [make_vla_obs(i, TEXTS[i % len(TEXTS)]) for i in range(8)]
    alone = [openvla.predict([o])[0].actions for o in obs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda o: openvla.predict([o])[0].actions, obs * 3))
    for i, got in enumerate(together):
        assert (got == alone[i % len(obs)]).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="forces a capture that cannot succeed without CUDA")
def test_a_failed_capture_falls_back_to_eager_steps(openvla: OpenVLAPolicy, make_vla_obs, caplog) -> None:
    """use_graphs forced on a CPU-only build, where making a CUDA stream raises: the tokens are still the
    dynamic path's, the failure is logged once, and the pool stops trying."""
    pool = StaticDecodePool(openvla.model, use_graphs=True)
    allowed = openvla._allowed_ids()
    inputs = _inputs(openvla, make_vla_obs, 3)
    with caplog.at_level("WARNING", logger="workers.policies.openvla.static_decode"):
        a = pool.decode(*inputs, 7, allowed)
        b = pool.decode(*inputs, 7, allowed)
    expected = greedy_decode(openvla.model, *inputs, 7, allowed)
    assert torch.equal(a, expected) and torch.equal(b, expected)
    assert pool.use_graphs is False and all(d.graph is None for d in pool.decoders.values())
    assert sum("capture failed" in r.getMessage() for r in caplog.records) == 1
