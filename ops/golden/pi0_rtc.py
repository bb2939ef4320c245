"""Real-time chunking golden fixture: LeRobot 0.6.1's RTC module (lerobot/policies/rtc) driving its pi0 on our
tiny pi0 weights, in the shared LeRobot 0.6.1 env (pi0_lerobot.LEROBOT_06), on the pi0 fixture's inputs.

Each case: item (observation), chunk A from noise A (the chunk the robot is executing), `executed` steps of it
already played, so the prefix is A[executed:]; chunk B from noise B unguided, guided by LeRobot 0.6.1 as
shipped (its correction is the weighted error itself, J = I) and guided with the Jacobian of the velocity
field (the paper's vector-Jacobian product). The cases cover the four prefix schedules, several delays,
horizons (one longer than the prefix, which LeRobot cuts) and guidance weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ops.golden import pi0_lerobot
from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import weights_digest

FIXTURE = "pi0_rtc_lerobot06"
RUNNER = "lerobot06_pi0_rtc_ref.py"
CASES = (  # (item, executed, inference delay, execution horizon, max guidance weight, schedule, seed A, seed B)
    (0, 20, 3, 10, 10.0, "linear", 11, 111),
    (1, 30, 5, 15, 2.0, "exp", 12, 112),
    (2, 38, 2, 20, 10.0, "ones", 13, 113),
    (0, 10, 4, 25, 10.0, "zeros", 21, 121),
    (1, 30, 5, 15, 5.0, "exp", 12, 112),  # ILL_CONDITIONED: see below
)
# Cases whose VJP-guided flow amplifies a change of one float32 ulp in the noise ~1000x on these random
# weights (measured: 1e-7 relative -> 1e-4 in the actions), so fp32 rounding differences between two correct
# implementations show up at 1e-2; their identity-Jacobian flow is well-conditioned (5e-7).
ILL_CONDITIONED = (4,)
# The RTC cases run on the pi0 fixture's 224x224 items only (pi0_lerobot.inputs() without the sized ones).
ADAPTATIONS = [*pi0_lerobot.ADAPTATIONS_06[:3],
               "images given at 224x224, so its resize is the identity (openpi's resize is openpi_images.npz)",
               *pi0_lerobot.ADAPTATIONS_06[3:],
               "vjp_*: the denoiser handed to RTCProcessor.denoise_step marks x_t as requiring grad before the "
               "forward pass, so LeRobot's own autograd.grad differentiates through the velocity field "
               "(0.6.1 as shipped evaluates v first: J = I); rtc_* is 0.6.1 unchanged"]


def inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    stored, runner = pi0_lerobot.inputs()
    cases = case_arrays(CASES)
    stored.update(cases)
    runner.update(cases)
    return stored, runner


def case_arrays(table: tuple[tuple, ...]) -> dict[str, np.ndarray]:
    """The runner's case_* arrays for rows of (item, executed, delay, horizon, weight, schedule, seed A, seed B)."""
    from workers.policies.pi0_flow import row_noise

    cols = list(zip(*table, strict=True))
    return {
        "case_item": np.array(cols[0], dtype=np.int64), "case_executed": np.array(cols[1], dtype=np.int64),
        "case_delay": np.array(cols[2], dtype=np.int64), "case_horizon": np.array(cols[3], dtype=np.int64),
        "case_weight": np.array(cols[4], dtype=np.float64), "case_schedule": np.array(cols[5]),
        "case_seed_a": np.array(cols[6], dtype=np.int64), "case_seed_b": np.array(cols[7], dtype=np.int64),
        "case_noise_a": row_noise(list(cols[6]), 50, 32).numpy(),
        "case_noise_b": row_noise(list(cols[7]), 50, 32).numpy(),
    }


def build(py: Path, model_dir: Path, work: Path) -> Path:
    arrays, extra = pi0_lerobot.run_reference(py, RUNNER, model_dir, work, FIXTURE, inputs())
    versions = extra["versions"]
    meta = {"reference": "lerobot 0.6.1 PI0Policy.predict_action_chunk(batch, noise=..., inference_delay=..., "
                         "prev_chunk_left_over=..., execution_horizon=...) with RTCConfig (lerobot/policies/rtc)",
            "versions": versions, "adaptations": ADAPTATIONS, "checkpoint": "pi0-tiny",
            "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE}
    return save_fixture(FIXTURE, arrays, meta)
