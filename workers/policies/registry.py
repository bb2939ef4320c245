"""Which models exist, where their checkpoints live, and the one factory that loads them.

ENABLED_MODELS looks like "openvla-7b=/models/openvla-7b,pi0=/models/pi0,openvla-tiny,pi0-tiny": a
bare name resolves to <model_dir>/<name>. The family comes from the checkpoint's config.json
model_type, so a fine-tune under any name loads with the right backend.
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from pathlib import Path

from workers.policies import fingerprint
from workers.policies.base import Policy
from workers.policies.errors import CheckpointError, ModelNotFound
from workers.policies.hf_compat import require_supported_transformers
from workers.policies.loading import fingerprint_mode, load_checkpoint  # noqa: F401 (fingerprint_mode re-exported)
from workers.policies.presets import TINY_NAMES, build_tiny_checkpoints
from workers.policies.sim import SimPolicy, sim_family

log = logging.getLogger(__name__)

# Names we know how to serve; the value says what the checkpoint directory must be (for messages).
KNOWN_MODELS: dict[str, str] = {
    "openvla-7b": "openvla/openvla-7b from the hub (config.json, 3 safetensors shards + index, tokenizer)",
    "pi0": "a PI0 checkpoint in the transformers, LeRobot or openpi layout, plus the PaliGemma tokenizer files "
           "(see docs/models.md)",
    "smolvla": "a LeRobot SmolVLA checkpoint (lerobot/smolvla_base or a fine-tune) plus its VLM's config, tokenizer "
               "and processor files in vlm/ (see docs/models.md)",
    "openvla-tiny": "random-weight OpenVLA at toy size, built locally",
    "pi0-tiny": "random-weight pi0 at toy size, built locally",
    "pi0-tiny-lerobot": "pi0-tiny's weights in LeRobot's layout (lerobot/pi0_base naming, processor statistics)",
    "pi0-tiny-lerobot-v0": "pi0-tiny's weights in LeRobot's v0 layout (first lerobot/pi0 naming, buffer statistics)",
    "pi0-tiny-openpi": "pi0-tiny's weights in openpi's PyTorch conversion layout (assets/*/norm_stats.json)",
    "pi05": "a pi0.5 checkpoint in LeRobot's (lerobot/pi05_base) or openpi's PyTorch conversion layout, plus the "
            "PaliGemma tokenizer files (see docs/models.md)",
    "pi05-tiny": "random-weight pi0.5 at toy size in LeRobot 0.6.1's pi05 layout, built locally",
    "pi05-tiny-openpi": "pi05-tiny's weights in openpi's PyTorch conversion layout (assets/*/norm_stats.json)",
    "smolvla-tiny": "random-weight SmolVLA at toy size in LeRobot's layout, built locally",
    "openvla-7b-sim": "a simulated GPU with OpenVLA-7B's H100 batch-latency curve and output shape (benchmarks "
                      "and development only; workers/policies/sim.py)",
    "pi0-sim": "a simulated GPU with pi0's output shape (50×7 chunk) and an assumed H100 curve (benchmarks and "
               "development only)",
}


def known_models() -> list[str]:
    return sorted(KNOWN_MODELS)


def _unknown(name: str) -> ModelNotFound:
    known = known_models()
    return ModelNotFound(name, difflib.get_close_matches(name, known, n=3, cutoff=0.5), known)


def parse_model_options(spec: str) -> dict[str, dict[str, str]]:
    """"a=/p?center_crop=true&crop_scale=0.9,b" -> {"a": {"center_crop": "true", "crop_scale": "0.9"}, "b": {}}.
    Options a checkpoint's own config.json states win over these (see docs/models.md)."""
    out: dict[str, dict[str, str]] = {}
    for item in (part.strip() for part in (spec or "").split(",")):
        if item:
            head, _, query = item.partition("?")
            if query and "=" not in head:  # web/services/catalog.py reads the name up to the first "="
                raise ValueError(f"ENABLED_MODELS entry {item!r}: options need the NAME=PATH?key=value form")
            pairs = [p.partition("=") for p in query.split("&") if p]
            if any(not k.strip() or not sep for k, sep, _ in pairs):
                raise ValueError(f"bad options in ENABLED_MODELS entry {item!r}: expected ?key=value&key=value")
            out[head.partition("=")[0].strip()] = {k.strip(): v.strip() for k, _, v in pairs}
    return out


def parse_enabled_models(spec: str) -> dict[str, Path | None]:
    """"a=/p,b" -> {"a": Path("/p"), "b": None}. Unknown bare names raise ModelNotFound with suggestions;
    a name given with an explicit path may be anything (a fine-tune), its family comes from config.json.
    Options after "?" are parse_model_options' business."""
    out: dict[str, Path | None] = {}
    for item in (part.strip().partition("?")[0] for part in (spec or "").split(",")):
        if not item:
            continue
        name, sep, path = (s.strip() for s in item.partition("="))
        if not name or (sep and not path):
            raise ValueError(f"bad ENABLED_MODELS entry {item!r}: expected NAME or NAME=PATH")
        if not sep and name not in KNOWN_MODELS:
            raise _unknown(name)
        if name in out:
            raise ValueError(f"model {name!r} is listed twice in ENABLED_MODELS")
        out[name] = Path(path) if sep else None
    return out


def import_backends() -> None:
    """Import every backend's module (torch, transformers, timm): a supervisor that forks GPU workers does it
    once, before the first fork (ops/warmstart.py). Loads nothing and touches no device."""
    from workers.policies.loading import _loaders

    _loaders()


def resolve_path(name: str, path: Path | None, model_dir: Path) -> Path:
    """The checkpoint directory; a missing tiny preset is built into model_dir on first use, and a bare-named
    one built before fingerprints existed is rebuilt (random weights from a fixed seed: the same weights)."""
    bare = path is None
    if path is None:
        if name not in KNOWN_MODELS:
            raise _unknown(name)
        path = Path(model_dir) / name
    stale = bare and path.exists() and not (path / fingerprint.FILE_NAME).is_file()
    if name in TINY_NAMES and path.name == name and (not path.exists() or stale):
        log.warning("tiny checkpoint %s %s at %s: building it (random weights)", name,
                    "unregistered" if stale else "not found", path)
        build_tiny_checkpoints(path.parent, names=(name,), overwrite=False)
    if not path.exists():
        hint = f" ({KNOWN_MODELS[name]})" if name in KNOWN_MODELS else ""
        raise CheckpointError(f"checkpoint for model {name!r} not found at {str(path)!r}{hint}")
    return path


def load_policy(
    name: str,
    path: Path | None,
    *,
    model_dir: Path,
    dtype: str = "auto",
    device: str = "auto",
    self_check: bool = True,
    options: Mapping[str, str] | None = None,
    fingerprints: str = "require",
    fingerprint_dir: Path | None = None,
    allow_sim: bool = False,
) -> Policy:
    """Load `name` from `path` (or <model_dir>/<name>, building a missing tiny preset) and prove it
    (loading.load_checkpoint: fingerprint digests and outputs, self-check). The worker calls this before it
    reports ready, so any failure becomes its /health error. A sim model (a bare *-sim name, or
    NAME=sim:<family>) loads no checkpoint and only with `allow_sim`."""
    family = sim_family(name, path)
    if family is not None:
        policy = SimPolicy.load(name, family, allow=allow_sim, options=options)
        log.warning("SIMULATED model %s (no weights, never for robots); %s", name, policy.curve_text())
        return policy
    require_supported_transformers()  # before anything else: the message names the supported range
    return load_checkpoint(name, resolve_path(name, path, model_dir), dtype=dtype, device=device,
                           self_check=self_check, options=options, fingerprints=fingerprints,
                           fingerprint_dir=fingerprint_dir)
