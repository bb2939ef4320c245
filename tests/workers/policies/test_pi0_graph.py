"""pi0's Euler loop at a fixed shape (pi0_graph): the padded buffers give the plain loop's actions, on CPU
eagerly; on CUDA the captured graph gives the eager loop's actions and replays later batches (gpu marker)."""
from __future__ import annotations

import pytest
import torch

from workers.policies.pi0 import Pi0Policy
from workers.policies.pi0_flow import embed_prefix, integrate, prefix_cache, row_noise, sample_actions
from workers.policies.pi0_graph import BUCKETS, CAPACITY_STEP, FlowGraph, FlowGraphPool, bucket_for, capacity_for

CAMS = (("base_0_rgb",), ("base_0_rgb", "left_wrist_0_rgb"), ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"))


def _inputs(policy: Pi0Policy, observations, seeds):
    inputs = policy._prefix(observations)
    state = policy._state(observations)
    noise = row_noise(seeds, policy.cfg.chunk_size, policy.cfg.max_action_dim).to(policy.device)

    def fresh_cache():
        embeds = embed_prefix(policy.model, inputs["input_ids"], inputs["images"])
        return prefix_cache(policy.model, embeds, inputs["attention_mask"])

    return state, noise, inputs["attention_mask"], fresh_cache


def test_buckets_and_capacity() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 16)] == [1, 2, 4, 8, 16] and bucket_for(BUCKETS[-1] + 1) is None
    assert capacity_for(1) == CAPACITY_STEP and capacity_for(CAPACITY_STEP + 1) == 2 * CAPACITY_STEP


@torch.inference_mode()
def test_padded_buffers_equal_the_plain_loop_fp32(pi0: Pi0Policy, make_pi0_obs) -> None:
    """Three rows with one, two and three cameras (so a padded prefix mask), run in a bucket of 4 with the
    prefix padded to the next capacity: each row's actions are the plain loop's."""
    obs = [make_pi0_obs(i, cams=CAMS[i]) for i in range(3)]
    state, noise, mask, fresh_cache = _inputs(pi0, obs, [11, 12, 13])
    steps = pi0.cfg.num_inference_steps
    expected = integrate(pi0.model, state, noise, mask, fresh_cache(), steps)

    cache = fresh_cache()
    length = mask.shape[1]
    flow = FlowGraph(pi0.model, cache, mask.dtype, bucket_for(3), capacity_for(length + 1), steps)
    assert flow.keys[0].shape[2] > length  # the padding is really exercised
    flow.load(state, noise, mask, cache)
    got = flow.run(3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # The buffers are reloaded, not appended to: a second, different batch through the same object.
    state2, noise2, mask2, fresh2 = _inputs(pi0, obs[::-1], [21, 22, 23])
    expected2 = integrate(pi0.model, state2, noise2, mask2, fresh2(), steps)
    flow.load(state2, noise2, mask2, fresh2())
    torch.testing.assert_close(flow.run(3), expected2, rtol=1e-5, atol=1e-5)


def test_pool_on_cpu_runs_the_plain_loop(pi0: Pi0Policy, make_pi0_obs) -> None:
    assert FlowGraphPool(pi0.model).use_graphs is False
    [res] = pi0.predict([make_pi0_obs(0, seed=5)])
    [again] = pi0.predict([make_pi0_obs(0, seed=5)])
    assert (res.actions == again.actions).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.inference_mode()
def test_cuda_graph_equals_the_eager_loop(tiny_dir, make_pi0_obs) -> None:
    policy = Pi0Policy.load("pi0-tiny", tiny_dir / "pi0-tiny", dtype="float32", device="cuda")
    pool = policy.flow
    assert pool.use_graphs
    steps = policy.cfg.num_inference_steps
    for seeds in ([1, 2, 3], [4, 5, 6]):  # the second batch replays the graph the first captured
        obs = [make_pi0_obs(i, cams=CAMS[i]) for i in range(3)]
        state, noise, mask, fresh_cache = _inputs(policy, obs, seeds)
        expected = integrate(policy.model, state, noise, mask, fresh_cache(), steps)
        got = pool.integrate(state, noise, mask, fresh_cache(), steps)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert len(pool.graphs) == 1 and next(iter(pool.graphs.values())).graph is not None
    # And through the policy: the graphed flow equals the self-check's recomputing reference.
    inputs = policy._prefix(obs)
    noise = row_noise([7, 8, 9], policy.cfg.chunk_size, policy.cfg.max_action_dim).to(policy.device)
    kwargs = dict(state=policy._state(obs), noise=noise, num_steps=steps, **inputs)
    torch.testing.assert_close(sample_actions(policy.model, flow=pool.integrate, **kwargs),
                               sample_actions(policy.model, recompute_prefix=True, **kwargs), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="forces a capture that cannot succeed without CUDA")
@torch.inference_mode()
def test_a_failed_capture_falls_back_to_the_eager_loop(pi0: Pi0Policy, make_pi0_obs, caplog) -> None:
    """Capture is attempted (use_graphs forced on a CPU-only build, where making a CUDA stream raises):
    the request still gets the plain loop's actions, the failure is logged once, and graphs stay off."""
    pool = FlowGraphPool(pi0.model, use_graphs=True)
    obs = [make_pi0_obs(i, cams=CAMS[i]) for i in range(2)]
    state, noise, mask, fresh_cache = _inputs(pi0, obs, [3, 4])
    steps = pi0.cfg.num_inference_steps
    expected = integrate(pi0.model, state, noise, mask, fresh_cache(), steps)
    with caplog.at_level("WARNING", logger="workers.policies.pi0_graph"):
        got = pool.integrate(state, noise, mask, fresh_cache(), steps)
        again = pool.integrate(state, noise, mask, fresh_cache(), steps)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert pool.use_graphs is False and pool.graphs == {}
    assert sum("capture failed" in r.getMessage() for r in caplog.records) == 1
