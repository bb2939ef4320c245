"""OpenVLA golden fixture: upstream's published remote code (openvla/openvla `prismatic/extern/hf/`, the
same three files the openvla/openvla-7b hub repo ships) on our tiny OpenVLA checkpoint."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ops.golden.fixture import REGENERATE, pixels_to_u8, save_fixture
from ops.golden.inputs import openvla_inputs, weights_digest

FILES = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
REQUIREMENTS = ["transformers==4.40.1", "timm==0.9.10", "tokenizers==0.19.1", "numpy<2", "safetensors", "pillow"]
RUNNER = Path(__file__).resolve().parent / "runners" / "openvla_ref.py"
PROMPT_RUNNER = Path(__file__).resolve().parent / "runners" / "openvla_prompt_ref.py"
PROMPT_INSTRUCTIONS = ("pick up the red block", "Put The Carrot ON the plate", "open the drawer, then stop")
ADAPTATIONS = [
    "tiny llm_backbone_id registered in PrismaticConfig's tables (metaclass llama, as llama2-7b-pure)",
    "timm.create_model given the checkpoint's timm_model_kwargs (tower sizes) for the real timm ids",
    "tokenizer.json rewritten in tokenizers-0.19 format (same merges); model_input_names as Llama's",
    "literal 29871 in predict_action replaced by the tiny tokenizer's id of the bare word-boundary piece",
    "restricted run: generate() given a LogitsProcessor keeping the 256 action ids (our documented choice); "
    "free_* arrays are upstream's unrestricted greedy run",
]


def write_sources(src: Path, dest: Path) -> dict[str, str]:
    """Copy the three upstream files (and vla-scripts/deploy.py, for the prompts) from `src` into `dest`;
    returns provenance (commit or file hashes).

    `src` is a git directory of openvla/openvla (files read at HEAD), a checkout of it, or a folder
    holding the three files (e.g. a download of the openvla/openvla-7b hub repo; no deploy.py there)."""
    dest.mkdir(parents=True, exist_ok=True)
    prov: dict[str, str] = {"source": str(src)}
    wanted = {name: f"prismatic/extern/hf/{name}" for name in FILES} | {"deploy.py": "vla-scripts/deploy.py"}
    if (src / "HEAD").is_file() and (src / "objects").is_dir():
        git = ["git", f"--git-dir={src}"]
        prov["commit"] = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
        for name, rel in wanted.items():
            (dest / name).write_text(subprocess.check_output([*git, "show", f"HEAD:{rel}"], text=True))
    else:
        for name, rel in wanted.items():
            found = [p for p in (src / rel, src / name) if p.is_file()]
            if found:
                (dest / name).write_text(found[0].read_text())
            elif name != "deploy.py":
                raise FileNotFoundError(f"{name} not found under {src}")
    for name in wanted:
        if (dest / name).is_file():
            prov[f"sha256:{name}"] = hashlib.sha256((dest / name).read_bytes()).hexdigest()
    return prov


def upstream_prompts(py: Path, work: Path) -> dict[str, list[str]]:
    """deploy.py's get_openvla_prompt for openvla-7b and openvla-v01-7b paths ({} without deploy.py)."""
    deploy = work / "openvla-src" / "deploy.py"
    if not deploy.is_file():
        return {}
    out = work / "openvla-prompts.json"
    subprocess.run([str(py), str(PROMPT_RUNNER), str(deploy), str(out), *PROMPT_INSTRUCTIONS], check=True)
    return {"instructions": list(PROMPT_INSTRUCTIONS), **json.loads(out.read_text())}


def build(py: Path, model_dir: Path, src: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    prov = write_sources(src, work / "openvla-src")
    inputs, runner_inputs = openvla_inputs()
    np.savez(work / "openvla-inputs.npz", **runner_inputs)
    out = work / "openvla-out.npz"
    subprocess.run([str(py), str(RUNNER), str(work / "openvla-src"), str(model_dir), str(work / "openvla-inputs.npz"),
                    str(out)], check=True)
    with np.load(out) as ref:
        arrays, versions = fixture_arrays(inputs, runner_inputs, dict(ref))
    meta: dict[str, Any] = {
        "reference": "OpenVLAForActionPrediction.predict_action + PrismaticProcessor (upstream remote code)",
        "upstream": prov, "versions": versions, "adaptations": ADAPTATIONS,
        "checkpoint": "openvla-tiny", "weights_sha256": weights_digest(model_dir), "regenerate": REGENERATE,
        "deploy_prompts": upstream_prompts(py, work),
    }
    return save_fixture("openvla", arrays, meta)


def fixture_arrays(inputs: dict[str, np.ndarray], runner_inputs: dict[str, np.ndarray],
                   ref: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Per-image data (resized uint8, projected patches, a raw pixel corner) is stored once per image."""
    first = {int(i): n for n, i in reversed(list(enumerate(inputs["image_index"])))}
    order = [first[i] for i in range(len(first))]
    resized, identity = resized_images(ref, order, runner_inputs)
    arrays = dict(inputs)
    arrays.update(resized_u8=np.stack([r for i, r in enumerate(resized) if i not in identity]),
                  resized_identity=np.array(identity, dtype=np.int64), patches=ref["patches"][order],
                  pixel_mean=ref["pixel_mean"], pixel_std=ref["pixel_std"],
                  pixels_corner=ref["pixels"][order][:, :, :16, :16])
    for k in ("prompt_ids", "logits", "tokens", "actions", "free_logits", "free_tokens", "free_actions", "space_id"):
        arrays[k] = ref[k]
    return arrays, json.loads(str(ref["versions"]))


def resized_images(ref: dict[str, np.ndarray], order: list[int],
                   runner_inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Upstream's pixel tensors back to the uint8 images they came from (exactly, or raise); and the
    indices of inputs already at 224x224, which upstream must return unchanged (checked, not stored)."""
    mean, std = ref["pixel_mean"], ref["pixel_std"]
    resized = []
    for n in order:
        towers = [pixels_to_u8(ref["pixels"][n][3 * t: 3 * t + 3], mean[t], std[t]) for t in range(2)]
        if not np.array_equal(towers[0], towers[1]):
            raise ValueError("the two towers' resized images differ; store both")
        resized.append(towers[0])  # one resize (same size and kernel) feeds both normalisations
    identity = []
    for i, r in enumerate(resized):
        source = runner_inputs[f"image_{i}"]
        if source.shape == r.shape:
            if not np.array_equal(r, source):
                raise ValueError(f"upstream changed the already-{r.shape[0]}px image {i}; store it")
            identity.append(i)
    return resized, identity
