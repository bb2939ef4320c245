"""Real-time chunking golden fixture for pi0.5: LeRobot 0.6.1's RTC module (lerobot/policies/rtc) driving its
PI05Policy on pi05-tiny, in the shared LeRobot 0.6.1 env, on the pi0.5 fixture's inputs (pi05_lerobot.py), with
the cases of the pi0 one (ops/golden/pi0_rtc.py: chunk A, its leftover after `executed` steps as the prefix,
chunk B unguided, guided as shipped (J = I) and with the velocity differentiated (the paper's VJP))."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from ops.golden import pi0_rtc, pi05_lerobot
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
    from workers.policies.pi0_flow import row_noise

    stored, runner = pi05_lerobot.inputs()
    cols = list(zip(*CASES, strict=True))
    cases = {
        "case_item": np.array(cols[0], dtype=np.int64), "case_executed": np.array(cols[1], dtype=np.int64),
        "case_delay": np.array(cols[2], dtype=np.int64), "case_horizon": np.array(cols[3], dtype=np.int64),
        "case_weight": np.array(cols[4], dtype=np.float64), "case_schedule": np.array(cols[5]),
        "case_seed_a": np.array(cols[6], dtype=np.int64), "case_seed_b": np.array(cols[7], dtype=np.int64),
        "case_noise_a": row_noise(list(cols[6]), 50, 32).numpy(),
        "case_noise_b": row_noise(list(cols[7]), 50, 32).numpy(),
    }
    return {**stored, **cases}, {**runner, **cases}


def build(py: Path, model_dir: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    stored, runner_inputs = inputs()
    np.savez(work / "pi05-rtc-inputs.npz", **runner_inputs)
    out = work / f"{FIXTURE}-out.npz"
    subprocess.run([str(py), str(pi05_lerobot.RUNNERS / RUNNER), str(model_dir), str(work / "pi05-rtc-inputs.npz"),
                    str(out)], check=True)
    with np.load(out) as ref:
        arrays = {**stored, **{k: ref[k] for k in ref.files if k != "versions"}}
        versions = json.loads(str(ref["versions"]))
    meta = {"reference": "lerobot 0.6.1 PI05Policy.predict_action_chunk(batch, noise=..., inference_delay=..., "
                         "prev_chunk_left_over=..., execution_horizon=...) with RTCConfig (lerobot/policies/rtc)",
            "versions": versions, "adaptations": ADAPTATIONS, "checkpoint": "pi05-tiny",
            "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE}
    return save_fixture(FIXTURE, arrays, meta)
