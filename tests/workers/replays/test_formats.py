"""Every format reads back exactly what its writer recorded (video within codec tolerance)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.workers.replays.writers import (
    TASKS,
    Recorded,
    write_jsonl_dataset,
    write_lerobot_v21,
    write_lerobot_v30,
    write_npz_dataset,
    write_robomimic_hdf5,
)
from workers.replays.formats import detect_format, open_dataset

WRITERS: dict[str, tuple[str, Callable[[Path], Recorded], str, int]] = {
    # name: (file name, writer, expected format, max pixel error)
    "lerobot-v2.1": ("ds", write_lerobot_v21, "lerobot-v2.1", 0),
    "lerobot-v3.0": ("ds", write_lerobot_v30, "lerobot-v3.0", 0),
    "lerobot-v2.1-mp4": ("ds", lambda p: write_lerobot_v21(p, video=True), "lerobot-v2.1", 8),
    "lerobot-v3.0-mp4": ("ds", lambda p: write_lerobot_v30(p, video=True), "lerobot-v3.0", 8),
    "jsonl": ("ds", lambda p: write_jsonl_dataset(p, cameras=("front", "wrist")), "jsonl", 0),
    "npz": ("ds.npz", write_npz_dataset, "npz", 0),
    "npz-stored": ("ds.npz", lambda p: write_npz_dataset(p, compressed=False), "npz", 0),
    "robomimic": ("ds.hdf5", write_robomimic_hdf5, "robomimic-hdf5", 0),
}


def assert_matches(steps: list, rec: Recorded, max_pixel_err: int) -> None:
    for s in steps:
        np.testing.assert_allclose(s.recorded_action, rec.actions[s.episode][s.step], rtol=0, atol=1e-6)
        assert s.instruction == rec.instructions[s.episode][s.step]
        if rec.states:
            np.testing.assert_allclose(s.state, rec.states[s.episode][s.step], atol=1e-6)
        assert set(s.images) == set(rec.images[s.episode])
        for cam, img in s.images.items():
            assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
            diff = np.abs(img.astype(int) - rec.images[s.episode][cam][s.step].astype(int)).max()
            assert diff <= max_pixel_err, (cam, s.episode, s.step, diff)


@pytest.mark.parametrize("name", list(WRITERS))
def test_round_trip(tmp_path: Path, name: str) -> None:
    filename, write, fmt, max_err = WRITERS[name]
    rec = write(tmp_path / filename)
    with open_dataset(tmp_path / filename) as ds:
        assert ds.format == fmt
        infos = ds.episodes()
        assert [i.index for i in infos] == sorted(rec.actions)
        assert all(i.length == len(rec.actions[i.index]) for i in infos)
        assert infos[0].instruction == rec.instructions[0][0]
        assert sorted(infos[0].cameras) == sorted(rec.images[0])
        assert ds.validate() == rec.total_steps == ds.count_steps()
        steps = list(ds.iter_steps())
    assert len(steps) == rec.total_steps
    assert [(s.episode, s.step) for s in steps] == [(e, t) for e in sorted(rec.actions)
                                                    for t in range(len(rec.actions[e]))]
    assert_matches(steps, rec, max_err)


@pytest.mark.parametrize(("video", "row_group_size"), [(False, None), (False, 4), (True, 7)])
def test_lerobot_v30_selection_inside_a_shared_file(tmp_path: Path, video: bool, row_group_size: int | None) -> None:
    # Episode 1 lives in the middle of the shared parquet/MP4: its rows and frames must be its own,
    # also when its rows straddle row groups (read_rows decodes only the groups that hold them).
    rec = write_lerobot_v30(tmp_path / "ds", episodes=3, video=video, row_group_size=row_group_size)
    ds = open_dataset(tmp_path / "ds")
    assert ds.validate(episodes=[1], step_range=(4, 8)) == 4
    steps = list(ds.iter_steps(episodes=[2, 1], step_range=(4, 8)))
    assert [(s.episode, s.step) for s in steps] == [(2, 4), (2, 5), (2, 6), (2, 7), (1, 4), (1, 5), (1, 6), (1, 7)]
    assert_matches(steps, rec, 8 if video else 0)


def test_lerobot_task_changes_within_an_episode(tmp_path: Path) -> None:
    rec = write_lerobot_v21(tmp_path / "ds", switch_task=True)
    steps = list(open_dataset(tmp_path / "ds").iter_steps(episodes=[0]))
    assert [s.instruction for s in steps] == rec.instructions[0]
    assert steps[0].instruction == TASKS[0] and steps[-1].instruction == TASKS[2]


def test_lerobot_v30_tasks_from_unnamed_pandas_index(tmp_path: Path) -> None:
    rec = write_lerobot_v30(tmp_path / "ds", task_column="__index_level_0__")
    steps = list(open_dataset(tmp_path / "ds").iter_steps())
    assert [s.instruction for s in steps] == [t for e in sorted(rec.instructions) for t in rec.instructions[e]]


def test_lerobot_av1_video_as_lerobot_encodes_it(tmp_path: Path) -> None:
    rec = write_lerobot_v21(tmp_path / "ds", episodes=1, video=True, codec="libsvtav1")
    assert_matches(list(open_dataset(tmp_path / "ds").iter_steps()), rec, 8)


def test_jsonl_jpeg_frames(tmp_path: Path) -> None:
    rec = write_jsonl_dataset(tmp_path / "ds", image_format="JPEG", state_dim=None)
    steps = list(open_dataset(tmp_path / "ds").iter_steps(step_range=(0, 3)))
    assert len(steps) == 6 and all(s.state is None for s in steps)
    assert_matches(steps, rec, 6)


def test_npz_single_instruction_and_no_state(tmp_path: Path) -> None:
    rec = write_npz_dataset(tmp_path / "d.npz", episodes=3, steps=4, state_dim=None, per_step_instruction=False)
    ds = open_dataset(tmp_path / "d.npz")
    assert [i.instruction for i in ds.episodes()] == [TASKS[0]] * 3
    assert_matches(list(ds.iter_steps()), rec, 0)


def test_npz_stored_images_are_mapped_not_loaded(tmp_path: Path) -> None:
    # A replay slice opens the dataset afresh and reads a few hundred rows: an uncompressed image array
    # is memory-mapped (only those rows are read), a compressed one is loaded whole; both read the same.
    write_npz_dataset(tmp_path / "s.npz", episodes=2, steps=5, compressed=False)
    write_npz_dataset(tmp_path / "c.npz", episodes=2, steps=5, compressed=True)
    with open_dataset(tmp_path / "s.npz") as stored, open_dataset(tmp_path / "c.npz") as packed:
        a = list(stored.iter_steps(episodes=[1], step_range=(2, 4)))
        b = list(packed.iter_steps(episodes=[1], step_range=(2, 4)))
        assert isinstance(stored._load("images"), np.memmap) and not isinstance(packed._load("images"), np.memmap)
    for x, y in zip(a, b, strict=True):
        assert (x.episode, x.step) == (y.episode, y.step)
        np.testing.assert_array_equal(x.images["image"], y.images["image"])
        assert not isinstance(x.images["image"], np.memmap)  # a copy: the step outlives the dataset's map


def test_robomimic_instruction_override(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "d.hdf5", instruction=None)
    ds = open_dataset(tmp_path / "d.hdf5", instruction="lift the cube")
    assert {s.instruction for s in ds.iter_steps()} == {"lift the cube"}
    assert next(ds.iter_steps()).state.shape == (9,)  # eef_pos 3 + eef_quat 4 + gripper_qpos 2
    ds.close()


def test_step_range_and_counts(tmp_path: Path) -> None:
    write_npz_dataset(tmp_path / "d.npz", episodes=3, steps=10)
    ds = open_dataset(tmp_path / "d.npz")
    assert ds.count_steps(step_range=(8, None)) == 6
    assert ds.count_steps(episodes=[2], step_range=(0, 100)) == 10
    assert [s.step for s in ds.iter_steps(episodes=[1], step_range=(3, 5))] == [3, 4]


def test_detects_dataset_one_folder_down(tmp_path: Path) -> None:
    # How an uploaded archive of a folder unpacks: the dataset sits one level below.
    write_lerobot_v21(tmp_path / "outer" / "my_dataset", episodes=1)
    kind, root = detect_format(tmp_path / "outer")
    assert (kind, root) == ("lerobot", tmp_path / "outer" / "my_dataset")


def test_lerobot_v30_rows_out_of_order(tmp_path: Path) -> None:
    # Not how LeRobot writes files, but legal parquet: episodes interleaved and frames unsorted.
    rec = write_lerobot_v30(tmp_path / "ds", episodes=3)
    path = tmp_path / "ds/data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), path)
    ds = open_dataset(tmp_path / "ds")
    assert ds.validate() == 30
    assert_matches(list(ds.iter_steps(episodes=[1, 0])), rec, 0)
