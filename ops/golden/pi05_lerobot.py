"""pi0.5 golden fixture: LeRobot 0.6.1's `PI05Policy` (the openpi port behind `lerobot/pi05_base`), its
preprocessor (quantile normalisation, the state discretised into the prompt, tokenizer) and postprocessor, on
pi05-tiny (already in LeRobot's layout), fixed noise, images of several sizes (224x224, 480x640, 300x200: its
own torch resize-with-pad), float32 and its bf16 mode; Python 3.12 in the shared lerobot06 env."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import image_arrays, weights_digest
from ops.golden.pi0_lerobot import CAMERAS, LEROBOT_06, RUNNERS, Variant

ITEMS = (  # (instruction, cameras present, noise seed, image height, width)
    ("pick up the cup", (True, True, True), 21, 224, 224),
    ("put the red block in the bowl", (True, True, False), 22, 480, 640),
    ("close the drawer", (True, True, True), 23, 480, 640),
    ("stack the green block on the blue one", (True, True, True), 24, 480, 640),
    ("open_the\nmicrowave", (True, False, False), 25, 300, 200),
)
BATCH_ROWS = (2, 3)  # LeRobot batches rows that share a camera set and an image size
TOWER_ROWS = (1, 4)  # rows whose first camera's tower input (after LeRobot's resize) is recorded
ADAPTATIONS = [
    "get_gemma_config gives the tiny VLM/expert sizes for gemma_2b/gemma_300m, and the PaliGemma and expert "
    "classes get the tiny vision tower, projector width and vocabulary (0.6.1 hard-codes them)",
    "tokenizer step: the tiny checkpoint's tokenizer, BOS prepended as PaliGemma's does (hub id unreachable)",
    "weights: pi05-tiny's model.safetensors (LeRobot's names) through PI05Policy._fix_pytorch_state_dict_keys "
    "(its own tied lm_head -> embed_tokens copy), strict load",
    "float32 run: PI05Config(dtype='float32'); shipped_*: dtype='bfloat16' with its fp32 islands",
]
VARIANT = Variant("pi05_lerobot06", "lerobot06", "12", LEROBOT_06, "lerobot06_pi05_ref.py", ADAPTATIONS,
                  "lerobot 0.6.1 preprocessor -> PI05Policy.predict_action_chunk(batch, noise=...) -> postprocessor",
                  link_torch=False)
STATES = np.array([  # raw robot states: inside the quantiles, one beyond q99 and one below q01 (bins 255, -1)
    [0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.4, 0.05],
    [-0.7, 0.55, 0.7, -1.1, 1.0, 0.6, -0.25, 0.9],
    [0.85, 0.2, -0.1, 0.9, -0.8, 0.3, 0.45, 0.0],
    [1.3, -0.45, 0.05, 0.2, 0.0, -0.9, 0.1, 0.5],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
])


def inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(what the fixture stores, what the runner gets: the same plus the images themselves)."""
    from workers.policies.pi0_flow import row_noise

    specs = [(500 + 10 * n + c, h, w, 3.0) for n, (_, _, _, h, w) in enumerate(ITEMS) for c in range(len(CAMERAS))]
    arrays, images = image_arrays("input", specs)
    seeds = [seed for _, _, seed, _, _ in ITEMS]
    arrays.update(
        instructions=np.array([s for s, *_ in ITEMS]), seeds=np.array(seeds, dtype=np.int64), state=STATES,
        noise=row_noise(seeds, 50, 32).numpy(), batch_rows=np.array(BATCH_ROWS, dtype=np.int64),
        tower_rows=np.array(TOWER_ROWS, dtype=np.int64),
        **{f"present_{c}": np.array([p[i] for _, p, *_ in ITEMS]) for i, c in enumerate(CAMERAS)})
    runner = dict(arrays)
    for n in range(len(ITEMS)):
        for i, c in enumerate(CAMERAS):
            runner[f"image_{n}_{c}"] = images[n * len(CAMERAS) + i]
    return arrays, runner


def build(py: Path, model_dir: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    stored, runner_inputs = inputs()
    np.savez(work / "pi05-inputs.npz", **runner_inputs)
    out = work / f"{VARIANT.fixture}-out.npz"
    subprocess.run([str(py), str(RUNNERS / VARIANT.runner), str(model_dir), str(work / "pi05-inputs.npz"), str(out)],
                   check=True)
    with np.load(out) as ref:
        json_keys = [k for k in ref.files if k in ("versions", "prompt_ids", "prompts") or k.endswith("param_dtypes")]
        arrays = {**stored, **{k: ref[k] for k in ref.files if k not in json_keys}}
        extra = {k: json.loads(str(ref[k])) for k in json_keys}
    meta = {"reference": VARIANT.reference, "versions": extra.pop("versions"), "adaptations": VARIANT.adaptations,
            "checkpoint": "pi05-tiny", "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE, **extra}
    return save_fixture(VARIANT.fixture, arrays, meta)
