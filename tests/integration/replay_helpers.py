"""Datasets for the replay tests, written under the server's allow-listed root, and polling helpers."""
from __future__ import annotations

import io
import shutil
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

from tests.workers.replays.writers import (
    write_jsonl_dataset,
    write_lerobot_v21,
    write_npz_dataset,
    write_robomimic_hdf5,
)

FORMATS = ("npz", "jsonl", "robomimic", "lerobot")


def write_dataset(fmt: str, root: Path, episodes: int = 2, steps: int = 5, **kw) -> tuple[Path, int]:
    """Write a dataset of `fmt` under `root`; returns its path and its number of steps."""
    if fmt == "npz":
        path = root / "d.npz"
        rec = write_npz_dataset(path, episodes=episodes, steps=steps, **kw)
    elif fmt == "jsonl":
        path = root / "jsonl"
        rec = write_jsonl_dataset(path, episodes=episodes, steps=steps, **kw)
    elif fmt == "robomimic":
        path = root / "d.hdf5"
        rec = write_robomimic_hdf5(path, episodes=episodes, steps=steps, **kw)
    else:
        path = root / "lerobot"
        rec = write_lerobot_v21(path, episodes=episodes, steps=steps, **kw)
    return path, rec.total_steps


def upload_bytes(path: Path, archive: str = "zip") -> tuple[io.BytesIO, str]:
    """A file as it is, or a directory packed as a zip or a tar.gz, ready for a multipart body."""
    buf = io.BytesIO()
    if path.is_file():
        buf.write(path.read_bytes())
        name = path.name
    elif archive == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(path).as_posix())
        name = "dataset.zip"
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            tf.add(path, arcname=path.name)
        name = "dataset.tar.gz"
    buf.seek(0)
    return buf, name


class DataRoot:
    """A fresh folder under a customer's dataset root; `rel` gives the names the API accepts from them."""

    def __init__(self, base: Path):
        self.base = base.resolve()
        self.dir = self.base / f"test-{uuid.uuid4().hex[:10]}"
        self.dir.mkdir(parents=True)

    def rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.base).as_posix()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.base.is_dir() and not any(self.base.iterdir()):
            self.base.rmdir()


def poll_replay(client, headers, replay_id: str, timeout: float = 60.0, until=("succeeded", "failed", "canceled"),
                ) -> dict:
    end = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < end:
        body = client.get(f"/v1/replays/{replay_id}", headers=headers).get_json()
        if body["state"] in until:
            return body
        time.sleep(0.1)
    raise AssertionError(f"replay {replay_id} did not reach {until}: {body}")
