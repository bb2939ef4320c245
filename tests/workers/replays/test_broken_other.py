"""Broken robomimic, JSONL and NPZ datasets, and bad selections, are refused with a DatasetError."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.workers.replays.broken import refuse, truncate
from tests.workers.replays.recorded import encode_image
from tests.workers.replays.writers import write_jsonl_dataset, write_npz_dataset, write_robomimic_hdf5
from workers.replays import DatasetError, open_dataset

# ------------------------------------------------------------------------------------- robomimic HDF5


def test_robomimic_truncated(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "d.hdf5")
    truncate(tmp_path / "d.hdf5", 0.3)
    refuse(tmp_path / "d.hdf5", "HDF5")


def test_robomimic_lengths_disagree(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "d.hdf5")
    with h5py.File(tmp_path / "d.hdf5", "a") as f:
        del f["data/demo_1/obs/agentview_image"]
        f["data/demo_1/obs"].create_dataset("agentview_image", data=np.zeros((7, 64, 64, 3), np.uint8))
    refuse(tmp_path / "d.hdf5", "data/demo_1/obs/agentview_image", "has 7 rows but actions has 10")
    with pytest.raises(DatasetError, match="has 7 rows"):  # also when iterating without validating first
        list(open_dataset(tmp_path / "d.hdf5").iter_steps())


def test_robomimic_missing_actions_and_instruction(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "a.hdf5")
    with h5py.File(tmp_path / "a.hdf5", "a") as f:
        del f["data/demo_0/actions"]
    refuse(tmp_path / "a.hdf5", "data/demo_0/actions")
    write_robomimic_hdf5(tmp_path / "b.hdf5", instruction=None)
    refuse(tmp_path / "b.hdf5", "supply an instruction")


def test_robomimic_image_not_uint8(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "d.hdf5", cameras=("agentview_image",))
    with h5py.File(tmp_path / "d.hdf5", "a") as f:
        del f["data/demo_0/obs/agentview_image"]
        f["data/demo_0/obs"].create_dataset("agentview_image", data=np.zeros((10, 64, 64, 3), np.float32))
    refuse(tmp_path / "d.hdf5", "must be uint8")


# ------------------------------------------------------------------------------------------ JSONL+PNG


def _rewrite_jsonl(root: Path, line: int, change) -> None:
    rows = [json.loads(x) for x in (root / "episodes.jsonl").read_text().splitlines()]
    change(rows[line])
    (root / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("key", ["action", "instruction", "images", "step"])
def test_jsonl_missing_key(tmp_path: Path, key: str) -> None:
    write_jsonl_dataset(tmp_path)
    _rewrite_jsonl(tmp_path, 3, lambda r: r.pop(key))
    err = refuse(tmp_path, "line 4", key)
    assert err.field == "episodes.jsonl line 4"


def test_jsonl_action_lengths_disagree(tmp_path: Path) -> None:
    write_jsonl_dataset(tmp_path)
    _rewrite_jsonl(tmp_path, 5, lambda r: r["action"].pop())
    refuse(tmp_path, "line 6", "'action' length differs")


def test_jsonl_step_gap(tmp_path: Path) -> None:
    write_jsonl_dataset(tmp_path)
    _rewrite_jsonl(tmp_path, 5, lambda r: r.update(step=50))
    refuse(tmp_path, "episode 0", "without gaps")


def test_jsonl_truncated_png(tmp_path: Path) -> None:
    write_jsonl_dataset(tmp_path)
    truncate(tmp_path / "frames/ep001/front_0000.png")
    refuse(tmp_path, "corrupt or truncated PNG")


def test_jsonl_missing_image_and_escape(tmp_path: Path) -> None:
    write_jsonl_dataset(tmp_path / "a")
    (tmp_path / "a/frames/ep000/front_0007.png").unlink()
    refuse(tmp_path / "a", "line 8", "not found")
    write_jsonl_dataset(tmp_path / "b")
    (tmp_path / "secret.png").write_bytes(encode_image(np.zeros((4, 4, 3), np.uint8)))
    _rewrite_jsonl(tmp_path / "b", 0, lambda r: r.update(images={"front": "../secret.png"}))
    refuse(tmp_path / "b", "outside the dataset")


def test_jsonl_unsupported_encoding_and_bad_json(tmp_path: Path) -> None:
    write_jsonl_dataset(tmp_path / "a")
    (tmp_path / "a/frames/ep000/front_0000.png").write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8), "GIF"))
    refuse(tmp_path / "a", "unsupported image encoding GIF")
    write_jsonl_dataset(tmp_path / "b")
    with (tmp_path / "b/episodes.jsonl").open("a") as f:
        f.write('{"episode": 0, "step": 10, "action": [1,\n')
    refuse(tmp_path / "b", "line 21", "not valid JSON")


# ------------------------------------------------------------------------------------------------ NPZ


def _npz(path: Path, **arrays) -> None:
    np.savez(path, **arrays)


def test_npz_lengths_disagree(tmp_path: Path) -> None:
    imgs = np.zeros((5, 8, 8, 3), np.uint8)
    _npz(tmp_path / "d.npz", images=imgs, actions=np.zeros((4, 7)), instruction=np.array("x"))
    refuse(tmp_path / "d.npz", "images", "has 5 rows but 'actions' has 4")


def test_npz_stored_member_with_a_forged_local_header(tmp_path: Path) -> None:
    # The central directory is intact but the image member's own header is not: refused, never mapped
    # at a guessed offset.
    write_npz_dataset(tmp_path / "a.npz", compressed=False)
    data = bytearray((tmp_path / "a.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        at = zf.getinfo("images.npy").header_offset
    data[at:at + 4] = b"XXXX"
    (tmp_path / "a.npz").write_bytes(bytes(data))
    refuse(tmp_path / "a.npz", "corrupt or truncated NPZ")


def test_npz_missing_array_and_wrong_dtype(tmp_path: Path) -> None:
    _npz(tmp_path / "a.npz", images=np.zeros((4, 8, 8, 3), np.uint8), instruction=np.array("x"))
    refuse(tmp_path / "a.npz", "missing array 'actions'")
    _npz(tmp_path / "b.npz", images=np.zeros((4, 8, 8, 3), np.float32), actions=np.zeros((4, 7)),
         instruction=np.array("x"))
    refuse(tmp_path / "b.npz", "must be uint8")


def test_npz_truncated_and_pickled(tmp_path: Path) -> None:
    write_npz_dataset(tmp_path / "a.npz")
    truncate(tmp_path / "a.npz", 0.7)
    refuse(tmp_path / "a.npz", "corrupt or truncated NPZ")
    # An object array would need unpickling, which could run code from an upload: refused.
    _npz(tmp_path / "b.npz", images=np.zeros((2, 8, 8, 3), np.uint8), actions=np.zeros((2, 7)),
         instruction=np.array(["a", None], dtype=object))
    refuse(tmp_path / "b.npz", "instruction")


# ----------------------------------------------------------------------------------- selection, paths


def test_bad_selection(tmp_path: Path) -> None:
    write_npz_dataset(tmp_path / "d.npz", episodes=2)
    ds = open_dataset(tmp_path / "d.npz")
    with pytest.raises(DatasetError, match=r"unknown episode\(s\) \[5\]"):
        ds.validate(episodes=[0, 5])
    for bad in [(-1, 3), (5, 2), (20, 30), "0:3"]:
        with pytest.raises(DatasetError) as info:
            ds.count_steps(step_range=bad)
        assert info.value.field == "step_range"


def test_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    refuse(tmp_path / "empty", "not a dataset directory")
    refuse(tmp_path / "missing.npz", "not found")
    (tmp_path / "x.bin").write_bytes(b"hello world")
    refuse(tmp_path / "x.bin", "unknown dataset file type")


def test_robomimic_refuses_storage_outside_the_file(tmp_path: Path) -> None:
    # An upload must not turn HDF5 links or external raw storage into a read of a server file.
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(10 * 64 * 64 * 3))
    write_robomimic_hdf5(tmp_path / "a.hdf5", cameras=("agentview_image",))
    with h5py.File(tmp_path / "a.hdf5", "a") as f:
        del f["data/demo_1/obs/agentview_image"]
        f["data/demo_1/obs"].create_dataset("agentview_image", shape=(10, 64, 64, 3), dtype=np.uint8,
                                            external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    refuse(tmp_path / "a.hdf5", "data/demo_1/obs/agentview_image", "external")
    write_robomimic_hdf5(tmp_path / "b.hdf5", cameras=("agentview_image",))
    write_robomimic_hdf5(tmp_path / "other.hdf5", cameras=("agentview_image",))
    with h5py.File(tmp_path / "b.hdf5", "a") as f:
        del f["data/demo_0/actions"]
        f["data/demo_0/actions"] = h5py.ExternalLink(str(tmp_path / "other.hdf5"), "/data/demo_0/actions")
    refuse(tmp_path / "b.hdf5", "data/demo_0/actions", "links to other files")
