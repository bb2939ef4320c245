"""The pi0.5 checkpoint layouts, recognised from their files, read into one Pi05Model.

- lerobot (LeRobot 0.6.1 `PI05Policy.save_pretrained`, e.g. lerobot/pi05_base): config.json `"type": "pi05"`
  (Gemma variants, `chunk_size`, `max_action_dim`, `image_resolution`, `tokenizer_max_length` 200,
  `input_features`); tensors `model.paligemma_with_expert.paligemma.model.*` (PaliGemma; `lm_head` tied to the
  embedding), `model.paligemma_with_expert.gemma_expert.model.layers.N.{input,post_attention}_layernorm.dense.*`,
  `...gemma_expert.model.norm.dense.*`, `...gemma_expert.lm_head.weight` (unused), `model.action_in_proj.*`,
  `model.action_out_proj.*`, `model.time_mlp_{in,out}.*`. Statistics: the preprocessor's
  `normalizer_processor` step file (`observation.state.{q01,q99}`), the postprocessor's `unnormalizer_processor`
  (`action.{q01,q99}`); mode QUANTILES: `2 (x - q01) / (q99 - q01) - 1`, the inverse `(y + 1) (q99 - q01) / 2
  + q01`, epsilon only where q99 == q01. Images: LeRobot's own torch resize-with-pad, centred.
- openpi (`examples/convert_jax_model_to_pytorch.py` on a pi05 config): config.json {action_dim,
  action_horizon, paligemma_variant, action_expert_variant, precision}, the same as pi0's export: told apart by
  its tensors (`time_mlp_in.*`, adaptive norms, no `state_proj`); the names above without `model.`;
  statistics in assets/<asset_id>/norm_stats.json (q01/q99), openpi's quantile maps with 1e-6 added to
  the range both ways. Images: openpi-client's PIL resize-with-pad.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.policies.checkpoint import checkpoint_shapes, read_json
from workers.policies.errors import CheckpointError
from workers.policies.pi0_layouts import (
    lerobot_stats,
    model_sizes,
    native_to_openpi,
    openpi_norm_stats,
    openpi_to_native,
    tied_names,
)

OPENPI_EPS = 1e-6
LEROBOT_EPS = 1e-8
MAX_TOKEN_LEN = 200  # openpi Pi0Config(pi05=True).max_token_len; LeRobot tokenizer_max_length
_OWN = ("action_in_proj.", "action_out_proj.", "time_mlp_in.", "time_mlp_out.")
_EXPERT_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"  # saved by both, used by neither


def to_native(name: str) -> str:
    """LeRobot / openpi name -> Pi05Model name."""
    bare = name.removeprefix("model.")
    return bare if bare.startswith(_OWN) else openpi_to_native(name)


def to_openpi(name: str) -> str:
    return name if name.startswith(_OWN) else native_to_openpi(name)


def is_pi05(config: dict[str, Any], names: set[str] | list[str]) -> bool:
    """LeRobot says so in config.json; openpi's export only by its tensors (its config equals pi0's)."""
    if config.get("type") == "pi05":
        return True
    return "paligemma_variant" in config and any(n.startswith(("time_mlp_in.", "model.time_mlp_in.")) for n in names)


@dataclass
class Pi05Layout:
    name: str  # "lerobot" | "openpi"
    config: dict[str, Any]  # PI0Config kwargs (sizes, chunk, dims, steps, periods)
    stats: dict[str, dict[str, list[float]]]  # {"state": {q01, q99}, "actions": {q01, q99}}
    eps: float
    openpi_eps: bool  # openpi adds eps to the quantile range both ways; LeRobot only where it is zero
    image_convention: str  # "openpi" (PIL) or "lerobot-torch"
    max_token_len: int = MAX_TOKEN_LEN
    meta: dict[str, Any] = field(default_factory=dict)  # cameras, action_type, units
    ignored: tuple[str, ...] = ()
    # openpi's `discrete_state_input`: False (its pi05_libero) leaves the state out of the prompt, and so out
    # of the model altogether; the prompt is then pi0's (BOS, instruction, "\n").
    discrete_state: bool = True

    def rename(self, name: str) -> str:
        return to_native(name)

    def ignorable(self, name: str) -> bool:
        return name in self.ignored


def detect(path: Path, *, asset_id: str | None = None, discrete_state: str | None = None) -> Pi05Layout:
    """`asset_id` and `discrete_state` ("true"/"false") are the openpi layout's load options; config.json's own
    `discrete_state_input`, where a conversion wrote it, wins."""
    cfg = read_json(path / "config.json")
    names = set(checkpoint_shapes(path))
    if cfg.get("type") == "pi05" and any(n.startswith("model.paligemma_with_expert.") for n in names):
        if discrete_state is not None:
            raise CheckpointError("the discrete_state option is openpi's; a LeRobot pi05 checkpoint always puts the "
                                  "state into the prompt")
        return _lerobot(path, cfg, names)
    if is_pi05(cfg, names) and any(n.startswith("paligemma_with_expert.") for n in names):
        layout = _openpi(path, cfg, names, asset_id)
        layout.discrete_state = _flag(cfg.get("discrete_state_input", discrete_state or True), "discrete_state")
        return layout
    raise CheckpointError(
        f"{str(path)!r} is not a pi0.5 layout we know: config.json has type={cfg.get('type')!r}, keys "
        f"{sorted(cfg)[:8]}; tensors start {sorted(names)[:4]}. Known: LeRobot ('type': 'pi05', "
        "model.paligemma_with_expert.*), openpi's PyTorch conversion (paligemma_variant, time_mlp_in.*)")


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise CheckpointError(f"option {name} must be true or false, got {value!r}")


def _model_config(cfg: dict[str, Any], chunk: int, dim: int, steps: int) -> dict[str, Any]:
    sizes = model_sizes(cfg, cfg.get("paligemma_variant", "gemma_2b"), cfg.get("action_expert_variant", "gemma_300m"))
    res = cfg.get("image_resolution") or [224, 224]
    if int(res[0]) != int(res[1]):
        raise CheckpointError(f"pi0.5 needs a square image_resolution, config.json has {res}")
    sizes["vlm_config"]["vision_config"]["image_size"] = int(res[0])
    return {**sizes, "chunk_size": chunk, "max_state_dim": dim, "max_action_dim": dim, "num_inference_steps": steps,
            "min_period": float(cfg.get("min_period", 4e-3)), "max_period": float(cfg.get("max_period", 4.0))}


def _quantiles(found: dict[str, dict[str, list[float]]], key: str, where: str) -> dict[str, list[float]]:
    entry = found.get(key) or {}
    if "q01" not in entry or "q99" not in entry:
        raise CheckpointError(f"pi0.5 checkpoint has no {key} q01/q99 quantiles in {where} (pi0.5 normalises "
                              "state and actions by quantiles)")
    if len(entry["q01"]) != len(entry["q99"]):
        raise CheckpointError(f"{key} q01 and q99 in {where} differ in length")
    return {"q01": list(entry["q01"]), "q99": list(entry["q99"])}


def _lerobot(path: Path, cfg: dict[str, Any], names: set[str]) -> Pi05Layout:
    modes = cfg.get("normalization_mapping") or {}
    for kind in ("STATE", "ACTION"):
        if modes.get(kind, "QUANTILES") != "QUANTILES":
            raise CheckpointError(f"pi0.5 normalization_mapping {kind}={modes[kind]!r} is not served; only "
                                  "QUANTILES (LeRobot's pi05 default)")
    found, eps = lerobot_stats(path, names, keep=("q01", "q99"))
    stats = {"state": _quantiles(found, "state", "the processor statistics"),
             "actions": _quantiles(found, "actions", "the processor statistics")}
    config = _model_config(cfg, int(cfg.get("chunk_size", 50)), int(cfg.get("max_action_dim", 32)),
                           int(cfg.get("num_inference_steps", 10)))
    cams = [k.removeprefix("observation.images.") for k, v in cfg.get("input_features", {}).items()
            if isinstance(v, dict) and v.get("type") == "VISUAL"]
    return Pi05Layout("lerobot", config, stats, eps, False, "lerobot-torch",
                      int(cfg.get("tokenizer_max_length", MAX_TOKEN_LEN)), {"cameras": cams} if cams else {},
                      (*tied_names(names, "model."), "model." + _EXPERT_HEAD))


def _openpi(path: Path, cfg: dict[str, Any], names: set[str], asset_id: str | None) -> Pi05Layout:
    file = openpi_norm_stats(path, asset_id)
    raw = read_json(file)
    found = raw.get("norm_stats", raw)
    where = str(file)
    stats = {"state": _quantiles(found, "state", where), "actions": _quantiles(found, "actions", where)}
    dim = int(cfg.get("action_dim", 32))
    config = _model_config(cfg, int(cfg.get("action_horizon", 50)), dim, 10)
    meta = {k: raw[k] for k in ("cameras", "action_type", "units") if k in raw}
    return Pi05Layout("openpi", config, stats, OPENPI_EPS, True, "openpi", int(cfg.get("max_token_len", MAX_TOKEN_LEN)),
                      meta, (*tied_names(names, ""), _EXPERT_HEAD))
