"""Runs INSIDE the openpi env (openpi's own pins: jax 0.5.3, flax 0.10.2, numpy<2, ...) with openpi's source
(written beside this run by the builder) on sys.path: openpi's pi0 state/action normalisation transforms,
nothing of the project. Usage: python openpi_norm_ref.py OPENPI_SRC NORM_STATS.json INPUTS.npz OUT.npz

What pi0's policy does around the model (openpi `policy_config.create_trained_policy`, pi0 = z-score):
inputs  Normalize(norm_stats) -> PadStatesAndActions(32)      (state)
outputs Unnormalize(norm_stats) -> robot output slice [:, :D]  (actions)
"""
from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np


def main(src: str, stats_path: str, inputs_path: str, out_path: str) -> None:
    sys.path.insert(0, src)
    from openpi import transforms
    from openpi.shared import normalize

    raw = json.loads(open(stats_path).read())
    raw = raw.get("norm_stats", raw)
    stats = {k: normalize.NormStats(mean=np.asarray(raw[k]["mean"]), std=np.asarray(raw[k]["std"]))
             for k in ("state", "actions")}
    inp = np.load(inputs_path)
    norm = transforms.Normalize(stats, use_quantiles=False)
    unnorm = transforms.Unnormalize(stats, use_quantiles=False)
    pad = transforms.PadStatesAndActions(model_action_dim=int(inp["y"].shape[-1]))
    dim = len(raw["actions"]["mean"])
    states = [pad(norm({"state": s}))["state"] for s in inp["state"]]
    # openpi's policy output carries the state too; Unnormalize is strict about every stats key.
    actions = [unnorm({"state": s, "actions": y})["actions"][:, :dim] for s, y in zip(states, inp["y"], strict=True)]
    versions = {p: importlib.metadata.version(p) for p in ("jax", "flax", "numpy")}
    np.savez(out_path, state_normalized=np.stack(states), actions=np.stack(actions),
             versions=np.array(json.dumps(versions)))


if __name__ == "__main__":
    main(*sys.argv[1:5])
