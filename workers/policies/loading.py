"""Loading one checkpoint directory and proving it before it serves: the backend from config.json, the
fingerprint (digests while the weights load, registered outputs after the self-check), the self-check.

Apart from registry.py (names, ENABLED_MODELS, tiny presets) so that `register` and the presets' builder
can load through it without an import cycle.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from workers.policies import fingerprint
from workers.policies.base import Policy
from workers.policies.checkpoint import checkpoint_shapes, read_json, require_dir
from workers.policies.errors import CheckpointError
from workers.policies.hf_compat import require_supported_transformers
from workers.policies.pi05.layouts import is_pi05
from workers.policies.selfcheck import check_registered_outputs

log = logging.getLogger(__name__)


def _loaders() -> dict[str, Callable[..., Policy]]:
    # Imported lazily: importing a backend pulls in torch/timm/transformers model code.
    from workers.policies.openvla.policy import OpenVLAPolicy
    from workers.policies.pi0 import Pi0Policy
    from workers.policies.pi05.policy import Pi05Policy
    from workers.policies.smolvla.policy import SmolVLAPolicy

    return {"openvla": OpenVLAPolicy.load, "pi0": Pi0Policy.load, "pi05": Pi05Policy.load,
            "smolvla": SmolVLAPolicy.load}


def family_of(config: dict, names: Iterable[str] = ()) -> str | None:
    """transformers configs say model_type; LeRobot's say "type"; openpi's conversion names Gemma variants, the
    same for pi0 and pi0.5, which only its tensor names (`names`) tell apart."""
    if "model_type" in config:
        return config["model_type"]
    if is_pi05(config, list(names)):
        return "pi05"
    if config.get("type") == "pi0" or "paligemma_variant" in config:
        return "pi0"
    if config.get("type") == "smolvla":
        return "smolvla"
    return None


# What load_policy does about fingerprints: "require" one (production), "prefer" (check one if present, warn
# and serve without: development), "ignore" (`register` itself, which is about to replace it).
FINGERPRINT_MODES = ("require", "prefer", "ignore")


def fingerprint_mode(environment: str, allow_unregistered: bool) -> str:
    """VLAAPI_ENV=development or ALLOW_UNREGISTERED_CHECKPOINTS=1 serve an unregistered checkpoint with a
    warning; anything else (production) refuses it."""
    return "prefer" if environment == "development" or allow_unregistered else "require"


def load_checkpoint(
    name: str,
    ckpt: Path,
    *,
    dtype: str = "auto",
    device: str = "auto",
    self_check: bool = True,
    options: Mapping[str, str] | None = None,
    fingerprints: str = "require",
    fingerprint_dir: Path | None = None,
) -> Policy:
    """Load `name` from the checkpoint directory `ckpt`, choosing the backend from config.json's model_type,
    then prove it: its tensors against the fingerprint's digests (hashed while the weights load), its serving
    path against a slower reference (PolicySelfCheckError), and the fixed inputs' outputs against the
    registered ones. The worker calls this before it reports ready, so any failure becomes its /health error."""
    require_supported_transformers()
    if fingerprints not in FINGERPRINT_MODES:
        raise ValueError(f"fingerprints must be one of {FINGERPRINT_MODES}, got {fingerprints!r}")
    ckpt = require_dir(ckpt)
    model_type = family_of(read_json(ckpt / "config.json"), checkpoint_shapes(ckpt))
    loaders = _loaders()
    if model_type not in loaders:
        raise CheckpointError(
            f"{str(ckpt / 'config.json')!r} has model_type {model_type!r}; supported: {sorted(loaders)}"
        )
    registered = _registered(name, ckpt, fingerprints, fingerprint_dir)
    log.info("loading %s (%s) from %s dtype=%s device=%s", name, model_type, ckpt, dtype, device)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        digests = pool.submit(lambda: (fingerprint.tensor_digests(ckpt), fingerprint.file_digests(ckpt))) \
            if registered else None
        try:
            policy = loaders[model_type](name, ckpt, dtype=dtype, device=device, options=options or {})
        except CheckpointError as exc:
            if digests is not None:  # a changed copy: say which tensors differ from the registered ones
                _verify(ckpt, registered, digests, cause=exc)
            raise
        if digests is not None:
            _verify(ckpt, registered, digests)
    loaded = time.monotonic()
    if self_check:
        policy.self_check()
        if registered:
            check_registered_outputs(policy, registered.get("outputs", []), options or {})
    log.info("loaded %s in %.2f s, checks %.2f s", name, loaded - began, time.monotonic() - loaded)
    return policy


def _verify(ckpt: Path, registered: dict, digests: Future, cause: Exception | None = None) -> None:
    tensors, files = digests.result()
    try:
        fingerprint.compare_tensors(tensors, registered["tensors"], repr(str(ckpt)))
        fingerprint.compare_files(files, registered.get("files", {}), repr(str(ckpt)))
    except fingerprint.FingerprintMismatch as exc:
        raise exc from cause


def _registered(name: str, ckpt: Path, mode: str, fingerprint_dir: Path | None) -> dict | None:
    """The checkpoint's fingerprint, or None where the mode lets it serve without one."""
    if mode == "ignore":
        return None
    found = fingerprint.locate(ckpt, fingerprint_dir)
    if found is not None:
        return fingerprint.read(found)
    where = f"{str(ckpt / fingerprint.FILE_NAME)!r}" + (
        f" or {str(Path(fingerprint_dir) / (ckpt.name + '.json'))!r}" if fingerprint_dir else "")
    if mode == "require":
        raise CheckpointError(f"model {name!r}: checkpoint {str(ckpt)!r} is not registered (no {where}); run "
                              "`vlaapi models register` on it once (with --out or FINGERPRINT_DIR for a read-only "
                              "mount), or set ALLOW_UNREGISTERED_CHECKPOINTS=1 to serve it unproven")
    log.warning("model %s: checkpoint %s is not registered (no %s): serving it without digest or output checks "
                "(development or ALLOW_UNREGISTERED_CHECKPOINTS); `vlaapi models register` it", name, ckpt, where)
    return None
