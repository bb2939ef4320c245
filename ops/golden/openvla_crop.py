"""OpenVLA center-crop golden fixture: upstream's TensorFlow `crop_and_resize` (experiments/robot/
openvla_utils.py, what the LIBERO fine-tunes were evaluated with), crop_scale 0.9, on the OpenVLA fixture's
images. The function is compiled from the openvla/openvla source at build time, in an env with OpenVLA's
tensorflow pin (the CPU build of 2.15.0: the same kernels)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import openvla_inputs

REQUIREMENTS = ["tensorflow-cpu==2.15.0", "numpy<2", "pillow"]
RUNNER = Path(__file__).resolve().parent / "runners" / "openvla_crop_ref.py"
CROP_SCALE = 0.9
UTILS = "experiments/robot/openvla_utils.py"


def write_utils(src: Path, dest: Path) -> dict[str, str]:
    if (src / "HEAD").is_file() and (src / "objects").is_dir():
        git = ["git", f"--git-dir={src}"]
        dest.write_text(subprocess.check_output([*git, "show", f"HEAD:{UTILS}"], text=True))
        return {"source": str(src), "commit": subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()}
    dest.write_text((src / UTILS).read_text())
    return {"source": str(src)}


def build(py: Path, src: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    prov = write_utils(src, work / "openvla_utils.py")
    stored, runner = openvla_inputs()
    images = {k: v for k, v in runner.items() if k.startswith("image_") and k != "image_index"}
    np.savez(work / "crop-inputs.npz", crop_scale=np.array(CROP_SCALE), **images)
    out = work / "crop-out.npz"
    subprocess.run([str(py), str(RUNNER), str(work / "openvla_utils.py"), str(work / "crop-inputs.npz"), str(out)],
                   check=True)
    with np.load(out) as ref:
        arrays = {"input_specs": stored["input_specs"], "input_digests": stored["input_digests"],
                  "crop_scale": np.array(CROP_SCALE), "cropped": ref["cropped"]}
        versions = json.loads(str(ref["versions"]))
    meta = {"reference": f"{UTILS} crop_and_resize via get_vla_action(center_crop=True)", "upstream": prov,
            "versions": versions, "regenerate": REGENERATE}
    return save_fixture("openvla_center_crop", arrays, meta)
