"""pi0 golden fixtures: LeRobot's pi0 policy on our tiny pi0 weights renamed to LeRobot's layout, with
fixed noise, in two versions: 0.3.3 (the code behind the `lerobot/pi0` checkpoint; Python 3.11, the
project's torch) and 0.6.1 (the openpi port behind `lerobot/pi0_base`, with openpi's fp32 islands and
its processor pipeline; Python 3.12 and its own torch 2.11 / transformers 5.5 from the registry). Images of
several sizes (224x224, 480x640, 300x200), each version resizing them itself: 0.3.3 pads top-left, 0.6.1
centred."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import image_arrays, weights_digest

REQUIREMENTS_03 = ["transformers==4.52.4", "huggingface-hub<1.0", "datasets<4", "draccus==0.10.0", "jsonlines",
                "imageio", "deepdiff", "pyserial", "av", "einops", "safetensors", "pillow", "termcolor",
                "gymnasium<1.0", "pytest"]
# One LeRobot 0.6.1 env serves every 0.6.1 reference (pi0, pi0.5, SmolVLA, RTC): the extras of all three.
LEROBOT_06 = ["lerobot[pi,smolvla]==0.6.1"]
RUNNERS = Path(__file__).resolve().parent / "runners"
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
ITEMS = (  # (instruction, cameras present, noise seed): 224x224, where every convention's resize is the identity
    ("pick up the cup", (True, True, True), 11),
    ("put the red block in the bowl", (True, True, False), 12),
    ("close the drawer", (True, True, True), 13),
)
BATCH_ROWS = (0, 2)  # LeRobot batches rows that share a camera set
# The pi0 LeRobot fixtures add items whose images LeRobot resizes and pads itself (0.3.3 top-left, 0.6.1
# centred): (instruction, cameras present, noise seed, image height, width), appended after ITEMS.
SIZED_ITEMS = (
    ("pick up the cup", (True, True, True), 14, 480, 640),
    ("put the red block in the bowl", (True, True, False), 15, 480, 640),
    ("open the top drawer slowly", (True, True, True), 16, 480, 640),
    ("close the drawer", (True, True, True), 17, 300, 200),
)
SIZED_BATCH_ROWS = (3, 5)  # rows sharing a camera set and an image size
TOWER_ROWS = (3, 6)  # rows whose first camera's tower input (after LeRobot's resize-with-pad) is recorded
ADAPTATIONS_03 = [
    "PaliGemmaWithExpertConfig (hard-coded 2B/300M sizes) given the tiny checkpoint's sizes",
    "tokenizer: the tiny checkpoint's, BOS prepended as PaliGemma's does (hub id unreachable)",
    "weights renamed transformers-native -> LeRobot 0.3.3 names, every LeRobot tensor found with its shape",
    "float32 run: LeRobot pi0 modules see torch.bfloat16 as float32 (0.3.3 hard-codes bf16 casts); "
    "shipped_*: its own bf16 casts kept",
]
ADAPTATIONS_06 = [
    "get_gemma_config gives the tiny VLM/expert sizes for gemma_2b/gemma_300m; the PaliGemma and expert "
    "classes get the tiny vision tower, projector width and vocabulary (0.6.1 hard-codes them)",
    "tokenizer step: the tiny checkpoint's tokenizer, BOS prepended as PaliGemma's does (hub id unreachable)",
    "weights renamed transformers-native -> LeRobot 0.6.1 names, strict load",
    "float32 run: PI0Config(dtype='float32'); shipped_*: dtype='bfloat16' with its fp32 islands",
]


@dataclass(frozen=True)
class Variant:
    fixture: str
    env: str
    python_minor: str
    requirements: list[str]
    runner: str
    adaptations: list[str]
    reference: str
    no_deps: list[str] = field(default_factory=list)
    link_torch: bool = True


VARIANTS = {
    "pi0-lerobot": Variant(
        "pi0_lerobot", "lerobot", "11", REQUIREMENTS_03, "lerobot_pi0_ref.py", ADAPTATIONS_03,
        "lerobot 0.3.3 PI0Policy.select_action(batch, noise=...)", no_deps=["lerobot==0.3.3"]),
    "pi0-lerobot06": Variant(
        "pi0_lerobot06", "lerobot06", "12", LEROBOT_06, "lerobot06_pi0_ref.py", ADAPTATIONS_06,
        "lerobot 0.6.1 preprocessor -> PI0Policy.predict_action_chunk(batch, noise=...) -> postprocessor",
        link_torch=False),
}


def inputs(sized: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(what the fixture stores, what the runner gets: the same plus the images themselves, `image_{n}_{c}`
    per item and camera, and `image_{c}` stacked over the items when they are all one size). `sized`: ITEMS
    then SIZED_ITEMS (the pi0 LeRobot fixtures); without it ITEMS alone (what the pi0 RTC and openpi-norm
    fixtures were built on)."""
    from workers.policies.pi0_flow import row_noise

    items = [(*item, 224, 224) for item in ITEMS] + (list(SIZED_ITEMS) if sized else [])
    specs = [(300 + 10 * n + c, h, w, 3.0) for n, (*_, h, w) in enumerate(items) for c in range(len(CAMERAS))]
    arrays, images = image_arrays("input", specs)
    seeds = [seed for _, _, seed, _, _ in items]
    arrays.update(
        instructions=np.array([s for s, *_ in items]), seeds=np.array(seeds, dtype=np.int64),
        state=np.stack([np.linspace(-1.0, 1.0, 8) * (n + 1) + 0.1 * n for n in range(len(items))]),
        noise=row_noise(seeds, 50, 32).numpy(), batch_rows=np.array(BATCH_ROWS, dtype=np.int64),
        **{f"present_{c}": np.array([p[i] for _, p, *_ in items]) for i, c in enumerate(CAMERAS)})
    if sized:
        arrays["sized_batch_rows"] = np.array(SIZED_BATCH_ROWS, dtype=np.int64)
        arrays["tower_rows"] = np.array(TOWER_ROWS, dtype=np.int64)
    runner = dict(arrays)
    for n in range(len(items)):
        for i, c in enumerate(CAMERAS):
            runner[f"image_{n}_{c}"] = images[n * len(CAMERAS) + i]
    if not sized:
        for i, c in enumerate(CAMERAS):
            runner[f"image_{c}"] = np.stack([images[n * len(CAMERAS) + i] for n in range(len(items))])
    return arrays, runner


def run_reference(py: Path, runner: str, model_dir: Path, work: Path, fixture: str,
                  inputs_pair: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> tuple[dict, dict]:
    """Run a LeRobot runner on (stored, runner) inputs: (the fixture's arrays, its JSON records: versions,
    prompt_ids, *param_dtypes), the records decoded."""
    work.mkdir(parents=True, exist_ok=True)
    stored, runner_inputs = inputs_pair
    np.savez(work / f"{fixture}-inputs.npz", **runner_inputs)
    out = work / f"{fixture}-out.npz"
    subprocess.run([str(py), str(RUNNERS / runner), str(model_dir), str(work / f"{fixture}-inputs.npz"), str(out)],
                   check=True)
    with np.load(out) as ref:
        json_keys = [k for k in ref.files if k in ("versions", "prompt_ids") or k.endswith("param_dtypes")]
        arrays = {**stored, **{k: ref[k] for k in ref.files if k not in json_keys}}
        return arrays, {k: json.loads(str(ref[k])) for k in json_keys}


def build(variant: Variant, py: Path, model_dir: Path, work: Path) -> Path:
    arrays, extra = run_reference(py, variant.runner, model_dir, work, variant.fixture, inputs(sized=True))
    versions, prompt_ids = extra.pop("versions"), extra.pop("prompt_ids")
    meta = {"reference": variant.reference, "versions": versions, "adaptations": variant.adaptations,
            "prompt_ids": prompt_ids, "checkpoint": "pi0-tiny", "weights_sha256": weights_digest(model_dir),
            "regenerate": REGENERATE, **extra}
    return save_fixture(variant.fixture, arrays, meta)
