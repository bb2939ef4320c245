"""SmolVLA golden fixture: LeRobot 0.6.1's SmolVLA policy (its config parser, strict safetensors load,
processor pipeline) on smolvla-tiny as written in LeRobot's layout, fixed noise, images of several sizes
(square and not: SmolVLA resizes with padding to 512), float32 and LeRobot's bf16 arrangement."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ops.golden import pi0_rtc
from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import image_arrays, weights_digest
from ops.golden.pi0_lerobot import LEROBOT_06, run_reference
from ops.golden.pi0_rtc import case_arrays

FIXTURE = "smolvla_lerobot06"
# The same sizes in attention_mode self_attn (every layer self-attention): LeRobot's other branch.
SELF_ATTN = ("smolvla_lerobot06_self_attn", "smolvla-tiny-self-attn")
ENV, PYTHON_MINOR, RUNNER = "lerobot06", "12", "lerobot06_smolvla_ref.py"
CAMERAS = ("camera1", "camera2", "camera3")
ITEMS = (  # (instruction, cameras present, noise seed, image height, width): one size per item
    ("pick up the cup", (True, True, True), 21, 480, 640),
    ("put the red block in the bowl", (True, True, False), 22, 224, 224),
    ("close the drawer", (True, True, True), 23, 480, 640),
    ("wipe the table\n", (True, False, False), 24, 300, 200),
    ("stack the green cube on the blue cube then push it to the left", (True, False, True), 25, 512, 512),
)
BATCH_ROWS = (0, 2)  # LeRobot batches rows that share a camera set and an image size
STATE_DIM = 8
ADAPTATIONS = [
    "vlm_model_name (SmolVLM2's hub id, fetched for its config and processor) is the checkpoint's vlm/ folder "
    "with the tiny SmolVLM config, tokenizer and processor files",
    "statistics handed to make_smolvla_pre_post_processors as read from the checkpoint's normalizer/"
    "unnormalizer safetensors (the pipeline steps are LeRobot's own)",
    "shipped_*: the VLM in bfloat16, expert and projections in float32, as LeRobot builds a pretrained SmolVLA "
    "(load_vlm_weights loads the VLM with torch_dtype=bfloat16); the checkpoint's fp32 values cast on load",
]
# Real-time chunking: LeRobot's RTC module driving its SmolVLA (cases as ops/golden/pi0_rtc.py's, on these items).
RTC_FIXTURE, RTC_RUNNER = "smolvla_rtc_lerobot06", "lerobot06_smolvla_rtc_ref.py"
RTC_CASES = (  # (item, executed, inference delay, execution horizon, max guidance weight, schedule, seed A, seed B)
    (0, 20, 3, 10, 10.0, "linear", 31, 131),
    (1, 30, 5, 15, 2.0, "exp", 32, 132),
    (3, 38, 2, 20, 10.0, "ones", 33, 133),
    (4, 10, 4, 25, 10.0, "zeros", 34, 134),
)
RTC_REFERENCE = ("lerobot 0.6.1 SmolVLAPolicy.predict_action_chunk(batch, noise=..., inference_delay=..., "
                 "prev_chunk_left_over=..., execution_horizon=...) with RTCConfig (lerobot/policies/rtc)")
REFERENCE = ("lerobot 0.6.1 PreTrainedConfig.from_pretrained -> SmolVLAPolicy.from_pretrained(strict=True) -> "
             "make_smolvla_pre_post_processors -> predict_action_chunk(batch, noise=...) -> postprocessor")


def image_specs() -> list[tuple[int, int, int, float]]:
    return [(500 + 10 * n + c, h, w, 3.0) for n, (_, _, _, h, w) in enumerate(ITEMS) for c in range(len(CAMERAS))]


def inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(what the fixture stores, what the runner gets: the same plus the images themselves)."""
    from workers.policies.pi0_flow import row_noise

    arrays, images = image_arrays("input", image_specs())
    seeds = [seed for _, _, seed, _, _ in ITEMS]
    arrays.update(
        instructions=np.array([s for s, *_ in ITEMS]), seeds=np.array(seeds, dtype=np.int64),
        state=np.stack([np.linspace(-1.0, 1.0, STATE_DIM) * (n + 1) + 0.1 * n for n in range(len(ITEMS))]),
        noise=row_noise(seeds, 50, 32).numpy(), batch_rows=np.array(BATCH_ROWS, dtype=np.int64),
        **{f"present_{c}": np.array([p[i] for _, p, *_ in ITEMS]) for i, c in enumerate(CAMERAS)})
    runner = dict(arrays)
    for n in range(len(ITEMS)):
        for i, c in enumerate(CAMERAS):
            runner[f"image_{n}_{c}"] = images[n * len(CAMERAS) + i]
    return arrays, runner


def build(py: Path, model_dir: Path, work: Path, fixture: str = FIXTURE) -> Path:
    arrays, extra = run_reference(py, RUNNER, model_dir, work, fixture, inputs())
    meta = {"reference": REFERENCE, "adaptations": ADAPTATIONS, "checkpoint": model_dir.name,
            "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE, "requirements": LEROBOT_06, **extra}
    return save_fixture(fixture, arrays, meta)


def rtc_inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    stored, runner = inputs()
    cases = case_arrays(RTC_CASES)
    return {**stored, **cases}, {**runner, **cases}


def build_rtc(py: Path, model_dir: Path, work: Path) -> Path:
    arrays, extra = run_reference(py, RTC_RUNNER, model_dir, work, RTC_FIXTURE, rtc_inputs())
    meta = {"reference": RTC_REFERENCE, "adaptations": [*ADAPTATIONS[:2], *pi0_rtc.ADAPTATIONS[-1:]],
            "checkpoint": model_dir.name, "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE,
            "requirements": LEROBOT_06, **extra}
    return save_fixture(RTC_FIXTURE, arrays, meta)


def build_all(py: Path, models: Path, work: Path) -> list[Path]:
    """The preset (cross_attn), its self_attn twin (built here, not a preset, from the same seed), and RTC."""
    from workers.policies.smolvla.tiny import build_smolvla_tiny

    fixture, name = SELF_ATTN
    if not (models / name / "config.json").is_file():
        build_smolvla_tiny(models / name, cross_attention=False)
    return [build(py, models / "smolvla-tiny", work), build(py, models / name, work, fixture),
            build_rtc(py, models / "smolvla-tiny", work)]
