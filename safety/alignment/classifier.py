"""Example learned alignment check: a small torch MLP over per-step action/state features.

Trained by ops/train_safety_classifier.py on samples labelled by the rule checks; saved as safetensors weights
plus a JSON sidecar (architecture, feature names, held-out accuracy). torch is imported lazily so the rest of
the library runs on numpy alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from safety.alignment.base import AlignmentCheck
from safety.alignment.features import FEATURE_NAMES, step_features
from safety.errors import AlignmentCheckLoadError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "models" / "action_classifier.safetensors"


def build_model(n_in: int, hidden: list[int]) -> Any:
    import torch

    layers: list[Any] = []
    for width in hidden:
        layers += [torch.nn.Linear(n_in, width), torch.nn.ReLU()]
        n_in = width
    layers.append(torch.nn.Linear(n_in, 1))  # logit of "unsafe"
    return torch.nn.Sequential(*layers)


def metadata_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_classifier(model: Any, path: str | Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    metadata_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ActionClassifierCheck(AlignmentCheck):
    name = "action_classifier"
    time_budget_ms = 100.0

    def __init__(self, model: Any, meta: dict[str, Any], threshold: float | None = None) -> None:
        self.model = model
        self.meta = meta
        # Inference runs on numpy copies of the weights: torch's per-call and per-thread start-up costs
        # (milliseconds, in the runner's fresh thread) dwarf this 5k-parameter MLP's arithmetic.
        linears = [m for m in model if hasattr(m, "weight")]
        self._layers = [(m.weight.detach().numpy().astype(np.float64).T, m.bias.detach().numpy().astype(np.float64))
                        for m in linears]
        self.version = str(meta.get("version", "0"))
        self.threshold = float(meta.get("threshold", 0.5) if threshold is None else threshold)

    @classmethod
    def from_path(cls, path: str | Path, threshold: float | None = None) -> ActionClassifierCheck:
        try:
            import torch
            from safetensors.torch import load_file

            meta = json.loads(metadata_path(path).read_text(encoding="utf-8"))
            if tuple(meta["feature_names"]) != FEATURE_NAMES:
                raise ValueError("feature_names differ from this library's; retrain the classifier")
            model = build_model(len(FEATURE_NAMES), list(meta["hidden"]))
            model.load_state_dict(load_file(str(path)))
            model.eval()
            with torch.inference_mode():  # warm up so the first request does not pay one-off costs in its budget
                model(torch.zeros((1, len(FEATURE_NAMES))))
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            raise AlignmentCheckLoadError("SAFETY_CLASSIFIER_PATH", f"cannot load classifier {path}: {exc}") from exc
        return cls(model, meta, threshold)

    def unsafe_probability(self, features: np.ndarray) -> np.ndarray:
        """P(unsafe) per row; the same function as the torch model (ReLU MLP, sigmoid head)."""
        h = features.astype(np.float64)
        for i, (w, b) in enumerate(self._layers):
            h = h @ w + b
            if i < len(self._layers) - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))

    def check(self, action: np.ndarray, context: dict[str, Any]) -> tuple[bool, float, str]:
        p_unsafe = self.unsafe_probability(step_features(action, context["robot_config"], context.get("positions")))
        worst = int(np.argmax(p_unsafe))
        confidence = float(1.0 - p_unsafe[worst])  # the chunk is as safe as its least safe step
        aligned = confidence >= context["threshold"]
        why = f"lowest safe-probability {confidence:.3f} at step {worst} (threshold {context['threshold']:.2f})"
        return aligned, confidence, why
