"""openpi pi0 normalisation golden fixture: openpi's own `transforms.Normalize` / `Unnormalize` /
`PadStatesAndActions` (z-score for pi0, epsilon 1e-6 both ways) on pi0-tiny's statistics.

openpi is not on the package registry (the name is a placeholder there): its source is read from a
openpi git directory or checkout (`--openpi-src`) and written into the work folder at build time; the env
holds the dependencies its transforms module imports, at openpi's pins."""
from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np

from ops.golden.fixture import REGENERATE, save_fixture
from ops.golden.inputs import weights_digest
from ops.golden.pi0_lerobot import inputs as pi0_inputs

REQUIREMENTS = ["jax==0.5.3", "flax==0.10.2", "jaxtyping==0.2.36", "beartype==0.19.0", "numpydantic", "pydantic",
                "numpy<2", "orbax-checkpoint==0.11.13", "sentencepiece", "transformers==4.53.2", "fsspec", "msgpack",
                "websockets", "dm-tree", "einops", "ml_collections==1.0.0", "chex==0.1.90", "pillow", "tqdm-loggable"]
NO_DEPS = ["openpi-client==0.1.2"]
RUNNER = Path(__file__).resolve().parent / "runners" / "openpi_norm_ref.py"


def write_source(src: Path, dest: Path) -> dict[str, str]:
    """openpi's src/ tree from a git dir (at HEAD) or a checkout into dest; returns provenance."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if (src / "HEAD").is_file() and (src / "objects").is_dir():
        git = ["git", f"--git-dir={src}"]
        tar = subprocess.check_output([*git, "archive", "HEAD", "src/openpi"])
        with tarfile.open(fileobj=BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
        return {"source": str(src), "commit": subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()}
    shutil.copytree(src / "src" / "openpi", dest / "src" / "openpi")
    return {"source": str(src)}


def build(py: Path, model_dir: Path, src: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    prov = write_source(src, work / "openpi-src")
    stored, _ = pi0_inputs()
    rng = np.random.default_rng(21)
    arrays = {"state": stored["state"], "y": rng.normal(0, 1.5, (len(stored["state"]), 50, 32))}
    np.savez(work / "openpi-norm-inputs.npz", **arrays)
    out = work / "openpi-norm-out.npz"
    subprocess.run([str(py), str(RUNNER), str(work / "openpi-src" / "src"), str(model_dir / "norm_stats.json"),
                    str(work / "openpi-norm-inputs.npz"), str(out)], check=True)
    with np.load(out) as ref:
        arrays.update(state_normalized=ref["state_normalized"], actions=ref["actions"])
        versions = json.loads(str(ref["versions"]))
    meta = {"reference": "openpi transforms.Normalize -> PadStatesAndActions(32); Unnormalize -> [:, :D]",
            "upstream": prov, "versions": versions, "checkpoint": "pi0-tiny",
            "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE}
    return save_fixture("openpi_norm", arrays, meta)
