"""Train the example learned alignment check (safety/alignment/classifier.py).

Data comes from the rule checks themselves: random robot variants (built-in profiles with perturbed limits),
random single-step actions and states, each labelled unsafe when any hard-limit rule check flags it. The model
is therefore a learned approximation of the rules, shipped to exercise the plugin path end to end, not a
substitute for them.

    .venv/bin/python -m ops.train_safety_classifier [--out safety/models/action_classifier.safetensors]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np
import torch

from safety.alignment.classifier import DEFAULT_PATH, build_model, save_classifier
from safety.alignment.features import FEATURE_NAMES, step_features
from safety.checks import Inputs, run_rule_checks
from safety.config import RobotConfig
from safety.profiles import list_profiles, load_profile
from safety.request import validate_robot_config

LABEL_CHECKS = ("gripper_range", "velocity", "workspace", "collision")
VERSION = "clf-1.0.0"


def _variant(rng: np.random.Generator, name: str) -> RobotConfig:
    base = load_profile(name).config
    trans, rot = base.v_trans * rng.uniform(0.5, 1.5), base.v_rot * rng.uniform(0.5, 1.5)
    return validate_robot_config({
        "type": name,
        "control_frequency_hz": float(base.control_hz * rng.choice([0.5, 1.0, 2.0])),
        "velocity_limits": {"translational": float(trans), "rotational": float(rot)},
    })


def _ratio(rng: np.random.Generator) -> float:
    """Speed as a fraction of the cap: mostly within it, 20 % beyond, so both labels are common."""
    return float(rng.uniform(0.0, 1.0) if rng.random() < 0.8 else rng.uniform(1.0, 2.0))


def _direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _sample(rng: np.random.Generator, cfg: RobotConfig) -> tuple[np.ndarray, np.ndarray | None]:
    action = np.zeros((1, 7))
    action[0, :3] = _direction(rng) * _ratio(rng) * cfg.v_trans / cfg.control_hz
    action[0, 3:6] = _direction(rng) * _ratio(rng) * cfg.v_rot / cfg.control_hz
    span_g = cfg.gripper_max - cfg.gripper_min
    inside = rng.random() < 0.85
    action[0, 6] = rng.uniform(cfg.gripper_min, cfg.gripper_max) if inside else \
        rng.choice([cfg.gripper_min - 1, cfg.gripper_max]) + rng.uniform(0, 0.3 * span_g)
    if rng.random() < 0.2:
        return action, None
    span = cfg.ws_max - cfg.ws_min
    return action, rng.uniform(cfg.box_min - 0.05 * span, cfg.ws_max + 0.05 * span)


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [p["id"] for p in list_profiles()]
    variants = [_variant(rng, name) for name in names for _ in range(25)]
    xs, ys = np.empty((n, len(FEATURE_NAMES)), np.float32), np.empty(n, np.float32)
    for i in range(n):
        cfg = variants[rng.integers(len(variants))]
        action, pos = _sample(rng, cfg)
        _, violations = run_rule_checks(Inputs(action, cfg, pos, None, None, None), names=LABEL_CHECKS)
        ys[i] = float(bool(violations))
        xs[i] = step_features(action, cfg, None if pos is None else pos + action[:, :3])[0]
    return xs, ys


def train(xs: np.ndarray, ys: np.ndarray, hidden: list[int], epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(xs.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(512):
            opt.zero_grad()
            loss_fn(model(x[idx]).squeeze(-1), y[idx]).backward()
            opt.step()
    return model.eval()


def evaluate_model(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    with torch.inference_mode():
        pred = (torch.sigmoid(model(torch.from_numpy(xs)).squeeze(-1)).numpy() >= 0.5).astype(np.float32)
    tp = float(((pred == 1) & (ys == 1)).sum())
    return {"heldout_accuracy": float((pred == ys).mean()), "unsafe_recall": tp / max(1.0, float(ys.sum())),
            "unsafe_precision": tp / max(1.0, float(pred.sum()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--samples", type=int, default=100000)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    xs, ys = make_dataset(args.samples, args.seed)
    cut = int(0.8 * len(xs))  # samples are i.i.d., so a plain split is a fair held-out set
    hidden = [64, 64]
    model = train(xs[:cut], ys[:cut], hidden, args.epochs, args.seed)
    metrics = evaluate_model(model, xs[cut:], ys[cut:])
    meta = {"version": VERSION, "hidden": hidden, "feature_names": list(FEATURE_NAMES), "threshold": 0.5,
            "label_checks": list(LABEL_CHECKS), "n_train": cut, "n_heldout": len(xs) - cut, "seed": args.seed,
            "unsafe_fraction": float(ys.mean()), "torch_version": torch.__version__,
            "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **metrics}
    save_classifier(model, args.out, meta)
    print(json.dumps({"out": args.out, "seconds": round(time.time() - t0, 1), **metrics}))


if __name__ == "__main__":
    main()
