"""The dataset probe: frame sizes capped from array headers before any frame is decoded, and its limits
holding in a child process (never call probe.run here: it limits the calling process)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ops.bench.hostile import _npy_header, npz_bomb
from tests.conftest import ROOT
from tests.workers.replays.writers import write_npz_dataset, write_robomimic_hdf5
from workers.replays.errors import DatasetError
from workers.replays.probe import check


def _req(path: Path, **kw) -> dict:
    return {"path": str(path), "uploaded": True, "archive": None, "max_extracted_bytes": 1 << 30,
            "episodes": None, "step_range": None, "instruction": None, **kw}


def test_a_normal_dataset_passes(tmp_path):
    path = tmp_path / "d.npz"
    rec = write_npz_dataset(path, episodes=2, steps=5)
    out = check(_req(path))
    assert out["ok"] and out["format"] == "npz" and out["total"] == rec.total_steps


def test_npz_frames_over_the_pixel_cap_are_refused_from_the_header(tmp_path):
    path = tmp_path / "big.npz"
    write_npz_dataset(path, episodes=1, steps=3)
    with zipfile.ZipFile(path, "a") as zf:  # a second camera whose header claims 8000x8000 frames
        zf.writestr("images_wrist.npy", _npy_header((3, 8000, 8000, 3), "|u1"))
    with pytest.raises(DatasetError, match="pixels"):
        check(_req(path))


def test_hdf5_frames_over_the_pixel_cap_are_refused_from_the_shape(tmp_path):
    import h5py

    path = tmp_path / "d.hdf5"
    write_robomimic_hdf5(path, episodes=1, steps=3)
    with h5py.File(path, "a") as fh:  # declared, never written: no bytes behind it
        fh["data/demo_0/obs"].create_dataset("huge_image", shape=(3, 6000, 6000, 3), dtype=np.uint8)
    with pytest.raises(DatasetError, match="pixels"):
        check(_req(path))


def test_the_child_refuses_a_bomb_within_its_limits(tmp_path):
    name, data = npz_bomb()
    path = tmp_path / name
    path.write_bytes(data)
    req = _req(path, memory_mb=512, cpu_seconds=10)
    proc = subprocess.run([sys.executable, "-m", "workers.replays.probe"], input=json.dumps(req), text=True,
                          capture_output=True, timeout=60, cwd=ROOT)
    out = json.loads(proc.stdout)
    # (its maxrss_kb is not asserted: Linux carries a forked parent's peak across exec, and pytest is large)
    assert out["ok"] is False and out["field"] == "file" and "compression bomb" in out["message"]
