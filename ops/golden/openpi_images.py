"""openpi-client image tools golden fixture: `resize_with_pad` to 224x224 and `convert_to_uint8`.

openpi-client pins numpy<2, which the reference itself does not need: it is installed with --no-deps
beside msgpack and websockets (what its package imports at top level)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import OPENPI_IMAGE_SHAPES, image_arrays

REQUIREMENTS = ["numpy", "pillow", "msgpack", "websockets"]
NO_DEPS = ["openpi-client==0.1.2"]
RUNNER = Path(__file__).resolve().parent / "runners" / "openpi_images_ref.py"


def inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(what the fixture stores, what the runner gets: the same plus the images themselves)."""
    arrays, images = image_arrays("input", [(200 + i, h, w, 0.0) for i, (h, w) in enumerate(OPENPI_IMAGE_SHAPES)])
    rng = np.random.default_rng(7)
    # Floats in [0, 1] incl. the exact edges and values just under a multiple of 1/255 (truncation, not rounding).
    f = rng.random((24, 32, 3)).astype(np.float32)
    f[0, :3] = [[0.0, 1.0, 0.5], [1 / 255, 2 / 255 - 1e-7, 0.999999], [0.0039, 0.9961, 0.25]]
    arrays["float_0"] = f
    return arrays, {**arrays, **{f"image_{i}": img for i, img in enumerate(images)}}


def build(py: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    inp, runner_inp = inputs()
    np.savez(work / "openpi-inputs.npz", **runner_inp)
    out = work / "openpi-out.npz"
    subprocess.run([str(py), str(RUNNER), str(work / "openpi-inputs.npz"), str(out)], check=True)
    with np.load(out) as ref:
        arrays = {**inp, **{k: ref[k] for k in ref.files if k != "versions"}}
        versions = json.loads(str(ref["versions"]))
    for key in [k for k in arrays if k.startswith("resized_")]:  # identity outputs: checked, not stored
        source = runner_inp[f"image_{key[len('resized_'):]}"]
        if arrays[key].shape == source.shape and np.array_equal(arrays[key], source):
            del arrays[key]
    meta = {"reference": "openpi_client.image_tools.resize_with_pad(img, 224, 224) / convert_to_uint8",
            "versions": versions, "regenerate": REGENERATE}
    return save_fixture("openpi_images", arrays, meta)
