"""Real-time chunking golden fixture for pi0.5: LeRobot 0.6.1's RTC module (lerobot/policies/rtc) driving its
PI05Policy on pi05-tiny, in the shared LeRobot 0.6.1 env, on the pi0.5 fixture's inputs (pi05_lerobot.py), with
the cases of the pi0 one (ops/golden/pi0_rtc.py: chunk A, its leftover after `executed` steps as the prefix,
chunk B unguided, guided as shipped (J = I) and with the velocity differentiated (the paper's VJP))."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ops.golden import pi0_lerobot, pi0_rtc, pi05_lerobot
from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import weights_digest

FIXTURE = "pi05_rtc_lerobot06"
RUNNER = "lerobot06_pi05_rtc_ref.py"
CASES = (  # (item, executed, inference delay, execution horizon, max guidance weight, schedule, seed A, seed B)
    (0, 20, 3, 10, 10.0, "linear", 31, 131),
    (1, 30, 5, 15, 2.0, "exp", 32, 132),  # 480x640, two cameras
    (4, 38, 2, 20, 10.0, "ones", 33, 133),  # 300x200, one camera
    (2, 10, 4, 25, 10.0, "zeros", 34, 134),
)
ADAPTATIONS = [*pi05_lerobot.ADAPTATIONS, pi0_rtc.ADAPTATIONS[-1]]


def inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    stored, runner = pi05_lerobot.inputs()
    cases = pi0_rtc.case_arrays(CASES)
    return {**stored, **cases}, {**runner, **cases}


def build(py: Path, model_dir: Path, work: Path) -> Path:
    arrays, extra = pi0_lerobot.run_reference(py, RUNNER, model_dir, work, FIXTURE, inputs())
    meta = {"reference": "lerobot 0.6.1 PI05Policy.predict_action_chunk(batch, noise=..., inference_delay=..., "
                         "prev_chunk_left_over=..., execution_horizon=...) with RTCConfig (lerobot/policies/rtc)",
            "versions": extra["versions"], "adaptations": ADAPTATIONS, "checkpoint": "pi05-tiny",
            "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE}
    return save_fixture(FIXTURE, arrays, meta)
