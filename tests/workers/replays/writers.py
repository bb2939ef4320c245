"""Write small recorded-trajectory datasets in every supported format, for tests (ours and the lead's).

Each writer returns the `Recorded` ground truth it wrote, so a test can compare what a reader yields
with what went in.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from tests.workers.replays.lerobot_writers import write_lerobot_v21, write_lerobot_v30
from tests.workers.replays.recorded import TASKS, Recorded, encode_image, encode_mp4, make_recorded

__all__ = ["TASKS", "Recorded", "encode_image", "encode_mp4", "make_recorded", "write_jsonl_dataset",
           "write_lerobot_v21", "write_lerobot_v30", "write_npz_dataset", "write_robomimic_hdf5"]


# ---------------------------------------------------------------- our own formats


def write_npz_dataset(path: Path, episodes: int = 2, steps: int = 10, image_hw: tuple[int, int] = (64, 64),
                      action_dim: int = 7, seed: int = 0, state_dim: int | None = 8,
                      per_step_instruction: bool = True, compressed: bool = True) -> Recorded:
    rec = make_recorded(episodes, steps, image_hw, action_dim, state_dim, ("image",), seed)
    eps = sorted(rec.actions)
    arrays = {
        "images": np.concatenate([rec.images[e]["image"] for e in eps]),
        "actions": np.concatenate([rec.actions[e] for e in eps]),
        "episode_index": np.repeat(np.array(eps, np.int64), steps),
    }
    if state_dim:
        arrays["state"] = np.concatenate([rec.states[e] for e in eps])
    if per_step_instruction:
        arrays["instruction"] = np.array([t for e in eps for t in rec.instructions[e]])
    else:
        arrays["instruction"] = np.array(TASKS[0])
        rec.instructions = {e: [TASKS[0]] * steps for e in eps}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return rec


def write_jsonl_dataset(root: Path, episodes: int = 2, steps: int = 10, image_hw: tuple[int, int] = (64, 64),
                        action_dim: int = 7, seed: int = 0, state_dim: int | None = 8,
                        cameras: tuple[str, ...] = ("front",), image_format: str = "PNG") -> Recorded:
    rec = make_recorded(episodes, steps, image_hw, action_dim, state_dim, cameras, seed)
    ext = "png" if image_format == "PNG" else "jpg"
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in sorted(rec.actions):
        for t in range(steps):
            images = {}
            for cam in cameras:
                rel = f"frames/ep{e:03d}/{cam}_{t:04d}.{ext}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encode_image(rec.images[e][cam][t], image_format))
                images[cam] = rel
            row = {"episode": e, "step": t, "instruction": rec.instructions[e][t], "images": images,
                   "action": rec.actions[e][t].tolist()}
            if state_dim:
                row["state"] = rec.states[e][t].tolist()
            lines.append(json.dumps(row))
    (root / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return rec


def write_robomimic_hdf5(path: Path, episodes: int = 2, steps: int = 10, image_hw: tuple[int, int] = (64, 64),
                         action_dim: int = 7, seed: int = 0, instruction: str | None = TASKS[0],
                         cameras: tuple[str, ...] = ("agentview_image", "robot0_eye_in_hand_image")) -> Recorded:
    import h5py

    rec = make_recorded(episodes, steps, image_hw, action_dim, None, cameras, seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = episodes * steps
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1})
        if instruction is not None:
            data.attrs["language_instruction"] = instruction
        for e in sorted(rec.actions):
            grp = data.create_group(f"demo_{e}")
            grp.attrs["num_samples"] = steps
            grp.create_dataset("actions", data=rec.actions[e])
            obs = grp.create_group("obs")
            for cam in cameras:
                obs.create_dataset(cam, data=rec.images[e][cam])
            rng = np.random.default_rng(seed + e)
            parts = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
            arrays = {k: rng.normal(0, 1, (steps, d)).astype(np.float32) for k, d in parts.items()}
            for k, v in arrays.items():
                obs.create_dataset(k, data=v)
            rec.states[e] = np.concatenate(list(arrays.values()), axis=1)
            rec.instructions[e] = [instruction or ""] * steps
    return rec


def tar_bytes(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    """A tar archive in memory: (name, data) members, or TarInfo entries as given (links, devices, dirs)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()
