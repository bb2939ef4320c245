"""Real-time chunking on SmolVLA: the same flow_sampling guidance as pi0 over SmolVLA's velocity field
(smolvla-tiny, fp32 CPU). The new chunk continues the executing one; rows with and without RTC share a batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.policies import flow_sampling as fs
from workers.policies.base import Observation
from workers.policies.errors import PolicyInputError
from workers.policies.smolvla.policy import SmolVLAPolicy

IMAGE = (np.arange(240 * 320 * 3) % 251).astype(np.uint8).reshape(240, 320, 3)
DELAY = 2


@pytest.fixture(scope="module")
def smolvla(tiny_dir: Path) -> SmolVLAPolicy:
    return SmolVLAPolicy.load("smolvla-tiny", tiny_dir / "smolvla-tiny", dtype="float32", device="cpu")


def observation(seed: int, rtc: dict | None = None) -> Observation:
    return Observation(images={"camera1": IMAGE}, instruction="pick up the cup", state=np.zeros(8),
                       options={"seed": seed} | ({"rtc": rtc} if rtc else {}))


def smooth_chunk(policy: SmolVLAPolicy, steps: int = 8) -> np.ndarray:
    """What a trained policy's chunk looks like (smolvla-tiny's own are rough): a slow curve in robot units."""
    stats = policy.action_stats
    ramp = np.linspace(0.0, 1.0, steps)[:, None]
    return stats.mean + stats.std * (np.sin(2.0 + 1.5 * ramp + np.arange(len(stats.mean))) * 0.8)


def test_spec_declares_rtc(smolvla):
    assert smolvla.spec.real_time_chunking and set(smolvla.spec.request_options) == {"seed", "rtc"}


@pytest.mark.parametrize("jacobian", fs.JACOBIANS)
def test_the_new_chunk_continues_the_executing_one(smolvla, jacobian):
    """A request at a latency of 2 control periods carries a smooth chunk's remainder; over six seeds the
    largest jump where the robot switches (new step 2 after the executing step 1) is at most half the plain
    switch's, and the delayed steps follow the executing ones."""
    smooth = smooth_chunk(smolvla)
    rtc = {"prev_actions": smooth.tolist(), "inference_delay": DELAY, "jacobian": jacobian}
    jumps: dict[str, list[float]] = {"plain": [], "rtc": []}
    std = smolvla.action_stats.std
    for seed in range(6):
        for mode, options in (("plain", None), ("rtc", rtc)):
            chunk = smolvla.predict([observation(3000 + seed, options)])[0].actions
            jumps[mode].append(float((np.abs(chunk[DELAY] - smooth[DELAY - 1]) / std).max()))
            if mode == "rtc":
                follow = float((np.abs(chunk[:DELAY] - smooth[:DELAY]) / std).max())
                assert follow < 0.5 * jumps["plain"][-1], (seed, follow, jumps)
    assert max(jumps["rtc"]) * 2 <= max(jumps["plain"]), jumps


def test_rtc_and_plain_rows_share_a_batch(smolvla):
    rtc = {"prev_actions": smooth_chunk(smolvla).tolist(), "inference_delay": DELAY, "jacobian": "vjp"}
    batch = [observation(1, rtc), observation(2), observation(3, {**rtc, "jacobian": "identity"})]
    for obs, res in zip(batch, smolvla.predict(batch), strict=True):
        np.testing.assert_allclose(res.actions, smolvla.predict([obs])[0].actions, rtol=1e-4, atol=1e-6)


def test_without_rtc_nothing_changes(smolvla):
    """A guidance of zero weight is no guidance: the plain path is the golden-tested one."""
    rtc = {"prev_actions": smooth_chunk(smolvla).tolist(), "inference_delay": 0, "execution_horizon": 1,
           "prefix_attention_schedule": "zeros"}
    np.testing.assert_allclose(smolvla.predict([observation(5, rtc)])[0].actions,
                               smolvla.predict([observation(5)])[0].actions, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("rtc", "field"), [
    ({"prev_actions": [[0.0] * 6], "inference_delay": 1}, "rtc.prev_actions"),
    ({"prev_actions": [[0.0] * 7]}, "rtc.inference_delay"),
    ({"prev_actions": [[0.0] * 7], "inference_delay": 1, "jacobian": "exact"}, "rtc.jacobian"),
])
def test_bad_rtc_is_named(smolvla, rtc, field):
    with pytest.raises(PolicyInputError) as err:
        smolvla.validate(observation(0, rtc))
    assert err.value.field == field
