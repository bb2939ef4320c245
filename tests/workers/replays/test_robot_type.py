"""The recorded robot a dataset names (issue 21: a replay without robot_config is judged by it)."""
from __future__ import annotations

import json

import h5py
import pytest

from safety.robots import profile_for
from tests.workers.replays.lerobot_writers import write_lerobot_v21
from tests.workers.replays.writers import write_npz_dataset, write_robomimic_hdf5
from workers.replays.probe import check


def _req(path) -> dict:
    return {"path": str(path), "uploaded": True, "archive": None, "max_extracted_bytes": 1 << 30,
            "episodes": None, "step_range": None, "instruction": None}


def test_lerobot_robot_type_reaches_the_probe(tmp_path):
    root = tmp_path / "lerobot"
    write_lerobot_v21(root, episodes=1, steps=3)
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "robot_type": "widowx"}))
    out = check(_req(root))
    assert out["robot_type"] == "widowx" and profile_for(out["robot_type"]) == "widowx_250"


@pytest.mark.parametrize("robots, expected", [(["Panda"], "Panda"), ("UR5e", "UR5e"), (None, None), ([3], None)])
def test_robomimic_robot_from_env_args(tmp_path, robots, expected):
    path = tmp_path / "d.hdf5"
    write_robomimic_hdf5(path, episodes=1, steps=3)
    with h5py.File(path, "a") as fh:
        kwargs = {} if robots is None else {"robots": robots}
        fh["data"].attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": kwargs})
    assert check(_req(path))["robot_type"] == expected


def test_broken_env_args_is_no_robot_not_a_failure(tmp_path):
    path = tmp_path / "d.hdf5"
    write_robomimic_hdf5(path, episodes=1, steps=3)
    with h5py.File(path, "a") as fh:
        fh["data"].attrs["env_args"] = "{not json"
    out = check(_req(path))
    assert out["ok"] and out["robot_type"] is None


def test_formats_without_robot_metadata(tmp_path):
    write_npz_dataset(tmp_path / "d.npz", episodes=1, steps=3)
    assert check(_req(tmp_path / "d.npz"))["robot_type"] is None


@pytest.mark.parametrize("name, profile", [
    ("widowx_250", "widowx_250"), ("WidowX 250", "widowx_250"), ("wx250s", "widowx_250"), ("Panda", "franka_panda"),
    ("franka-fr3", "franka_fr3"), ("UR5", "ur5e"), ("google_robot", "google_robot"), ("koch", None), ("", None),
    (None, None), (42, None)])
def test_profile_for_dataset_robot_names(name, profile):
    assert profile_for(name) == profile
