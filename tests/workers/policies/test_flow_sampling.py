"""workers/policies/flow_sampling.py: the soft prefix mask, the guided velocity (its vector-Jacobian product
against finite differences of a real function), option parsing, and real-time chunking on pi0-tiny: a row
refused with the field named, OpenVLA refusing the option, and the discontinuity at chunk boundaries in a
deterministic control loop (the same ChunkPlayer and metric as clients/python/examples/control_loop.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from vlaapi_client.chunks import ChunkPlayer
from vlaapi_client.control import jump_stats

from tests.conftest import TEST_MODEL_DIR
from workers.policies import flow_sampling as fs
from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError


@pytest.mark.parametrize("schedule", fs.SCHEDULES)
@pytest.mark.parametrize(("delay", "horizon", "total"), [(0, 10, 50), (3, 10, 50), (5, 5, 20), (4, 25, 12), (9, 4, 20)])
def test_prefix_weights_hold_the_delay_and_fade_by_the_horizon(schedule, delay, horizon, total):
    w = fs.prefix_weights(delay, horizon, total, schedule)
    held = min(delay, horizon, total)
    assert w.shape == (total,) and bool((w[:held] == 1).all()) and bool((w[min(horizon, total):] == 0).all())
    assert bool((w[1:] <= w[:-1]).all()) and bool(((w >= 0) & (w <= 1)).all())
    ramp = w[held : min(horizon, total)]
    if schedule == "ones":
        assert bool((ramp == 1).all())
    elif schedule == "zeros":
        assert bool((ramp == 0).all())
    else:
        assert bool(((ramp > 0) & (ramp < 1)).all())
    if schedule == "exp":  # below the linear ramp, never above
        assert bool((w <= fs.prefix_weights(delay, horizon, total, "linear")).all())


def test_guidance_weight_is_clipped_and_the_clip_at_pure_noise():
    """(1 - tau) / tau / r^2 with tau = 1 - t: infinite at t = 1 (pure noise), so the clip there; never above it."""
    for top in (2.0, 5.0, 10.0):
        clip = torch.full((1, 1, 1), top)
        weights = [float(fs.guidance_weight(1.0 - k / 10, clip)) for k in range(10)]
        assert weights[0] == top and all(0 < w <= top for w in weights)
        t = 0.5  # tau = 1/2: (1/2) / (1/2) * ((1/4 + 1/4) / (1/4)) = 2, under every clip above
        assert float(fs.guidance_weight(t, clip)) == pytest.approx(min(top, 2.0))


def test_vjp_correction_is_the_jacobian_transpose_of_the_error():
    """A real nonlinear velocity field; J^T e from autograd equals finite differences, and the identity mode
    takes J = I."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=gen, dtype=torch.float64) / 2
    velocity = lambda x, t: torch.tanh(x @ weight) * (1 + t[:, None, None])  # noqa: E731
    x = torch.randn(1, 6, 4, generator=gen, dtype=torch.float64)
    row = fs.ChunkPrefix(actions=np.random.default_rng(1).normal(size=(4, 4)), inference_delay=2, execution_horizon=5,
                         max_guidance_weight=3.0, schedule="linear", jacobian="vjp")
    out = {}
    for jac in fs.JACOBIANS:
        g = fs.guidance_for([row.__class__(**{**row.__dict__, "jacobian": jac})], lambda a: a, 6, 4, "cpu")
        g.target, g.weights = g.target.double(), g.weights.double()
        t = torch.full((1,), 0.6, dtype=torch.float64)
        out[jac] = fs.guided_velocity(velocity, x, t, 0.6, g)
    t = torch.full((1,), 0.6, dtype=torch.float64)
    x1 = lambda z: z - 0.6 * velocity(z, t)  # noqa: E731
    err = (g.target - x1(x)) * g.weights
    eps, jte = 1e-6, torch.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        dx = torch.zeros_like(x)
        dx[idx] = eps
        jte[idx] = ((x1(x + dx) - x1(x - dx)) / (2 * eps) * err).sum()
    w = fs.guidance_weight(0.6, torch.full((1, 1, 1), 3.0)).double()
    torch.testing.assert_close(out["vjp"], velocity(x, t) - w * jte, atol=1e-8, rtol=0)
    torch.testing.assert_close(out["identity"], velocity(x, t) - w * err, atol=1e-12, rtol=0)


BAD = [
    ({"rtc": [1]}, "rtc"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1, "extra": 1}}, "rtc"),
    ({"rtc": {"prev_actions": [[0.0] * 6], "inference_delay": 1}}, "rtc.prev_actions"),
    ({"rtc": {"prev_actions": [[0.0] * 7] * 51, "inference_delay": 1}}, "rtc.prev_actions"),
    ({"rtc": {"prev_actions": [[float("inf")] * 7], "inference_delay": 1}}, "rtc.prev_actions"),
    ({"rtc": {"prev_actions": [[0.0] * 7]}}, "rtc.inference_delay"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": True}}, "rtc.inference_delay"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1, "execution_horizon": 0}}, "rtc.execution_horizon"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1, "max_guidance_weight": -1}},
     "rtc.max_guidance_weight"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1, "prefix_attention_schedule": "LINEAR"}},
     "rtc.prefix_attention_schedule"),
    ({"rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1, "jacobian": "exact"}}, "rtc.jacobian"),
]


@pytest.fixture(scope="module")
def pi0():
    from workers.policies.pi0 import Pi0Policy

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return Pi0Policy.load("pi0-tiny", TEST_MODEL_DIR / "pi0-tiny", dtype="float32", device="cpu")


IMAGE = (np.arange(224 * 224 * 3) % 251).astype(np.uint8).reshape(224, 224, 3)


def observation(seed: int, rtc: dict | None = None) -> Observation:
    return Observation(images={"base_0_rgb": IMAGE}, instruction="pick up the cup", state=np.zeros(8),
                       options={"seed": seed} | ({"rtc": rtc} if rtc else {}))


@pytest.mark.parametrize(("options", "field"), BAD, ids=[f for _, f in BAD])
def test_pi0_refuses_bad_rtc_naming_the_field(pi0, options, field):
    with pytest.raises(PolicyInputError) as exc:
        pi0.validate(Observation(images={"base_0_rgb": IMAGE}, instruction="x", state=np.zeros(8), options=options))
    assert exc.value.field == field


def test_openvla_refuses_rtc():
    from workers.policies.openvla.policy import OpenVLAPolicy

    policy = OpenVLAPolicy.load("openvla-tiny", TEST_MODEL_DIR / "openvla-tiny", dtype="float32", device="cpu")
    assert not policy.spec.real_time_chunking
    obs = Observation(images={"primary": IMAGE}, instruction="x", options={
        "unnorm_key": policy.spec.default_unnorm_key, "rtc": {"prev_actions": [[0.0] * 7], "inference_delay": 1}})
    with pytest.raises(PolicyInputError, match="not a flow policy") as exc:
        policy.validate(obs)
    assert exc.value.field == "rtc"


def test_vjp_under_inference_mode_is_a_clear_error(pi0):
    rtc = {"prev_actions": [[0.0] * 7] * 4, "inference_delay": 2}
    g = fs.guidance_for([fs.parse({"rtc": rtc}, 7, 50)], pi0.normalize_actions, 50, 32, "cpu")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        fs.guided_velocity(lambda x, t: x, torch.zeros(1, 50, 32), torch.ones(1), 0.5, g)


def control_loop(pi0, mode: str, latency: int, ticks: int, horizon: int, jacobian: str = "vjp") -> dict:
    """ControlLoop's switching rule without a clock: a request when fewer than 2 x latency + 1 actions are
    queued, its answer `latency` ticks later, the actions played meanwhile skipped; `rtc` carries the remainder
    and the delay. Every request sees the same observation with a new seed."""
    player, pending, n, played = ChunkPlayer(horizon=horizon), None, 0, []
    player.switch(pi0.predict([observation(1000)])[0].actions, 0)
    for tick in range(ticks):
        if pending and tick == pending[0]:
            player.switch(pending[1], pending[2])
            pending = None
        if pending is None and player.remaining < 2 * latency + 1:
            prev, since = player.remainder()
            n += 1
            rtc = {"prev_actions": prev.tolist(), "inference_delay": min(latency, len(prev)), "jacobian": jacobian}
            pending = (tick + latency, pi0.predict([observation(1000 + n, rtc if mode == "rtc" else None)])[0].actions,
                       since)
        action = player.next()
        played += [] if action is None else [action]
    return jump_stats(played, player.switches)


@pytest.mark.parametrize("jacobian", fs.JACOBIANS)
def test_chunk_boundaries_continue_the_executing_chunk(pi0, jacobian):
    """Latency of 2 control periods. With random weights a chunk is rough inside (its own steps are as large as
    an unguided boundary's jump), so the executed-step metric cannot tell the modes apart; what RTC removes is
    the gap between the new chunk's first action and the executing chunk's plan for that tick: at least 2x."""
    plain = control_loop(pi0, "switch", latency=2, ticks=60, horizon=12)
    rtc = control_loop(pi0, "rtc", latency=2, ticks=60, horizon=12, jacobian=jacobian)
    assert plain["boundaries"] == rtc["boundaries"] >= 5
    assert rtc["plan_gap_max"] * 2 <= plain["plan_gap_max"], (plain, rtc)
    # the boundary is no rougher than the chunks themselves
    assert rtc["boundary_jump_max"] <= max(rtc["interior_step_max"], plain["boundary_jump_max"]), (plain, rtc)


@pytest.mark.parametrize("jacobian", fs.JACOBIANS)
def test_largest_jump_at_a_switch_from_a_smooth_chunk_falls(pi0, jacobian):
    """The jump metric where it means something: the robot executes a smooth chunk (as a trained policy's is;
    pi0-tiny's own are not), a request at a latency of 2 control periods carries its remainder, and the robot
    switches to the new chunk's step 2 after playing two actions. Over eight seeds, the largest jump at the
    switch with real-time chunking is at most half the plain switch's, and close to the smooth chunk's own step."""
    stats = pi0.action_stats
    ramp = np.linspace(0.0, 1.0, 8)[:, None]
    smooth = stats.mean + stats.std * (np.sin(2.0 + 1.5 * ramp + np.arange(len(stats.mean))) * 0.8)
    delay = 2
    own_step = float(np.abs(smooth[delay] - smooth[delay - 1]).max())
    rtc = {"prev_actions": smooth.tolist(), "inference_delay": delay, "jacobian": jacobian}
    jumps = {"plain": [], "rtc": []}
    for seed in range(8):
        for mode, options in (("plain", None), ("rtc", rtc)):
            chunk = pi0.predict([observation(2000 + seed, options)])[0].actions
            jumps[mode].append(float(np.abs(chunk[delay] - smooth[delay - 1]).max()))
    assert max(jumps["rtc"]) * 2 <= max(jumps["plain"]), jumps
    assert max(jumps["rtc"]) <= own_step + 0.5 * (max(jumps["plain"]) - own_step), (own_step, jumps)
