"""Dataset names cannot leave the allow-listed root; uploads cannot write outside their folder."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.workers.replays.writers import tar_bytes, write_lerobot_v30, write_npz_dataset, write_robomimic_hdf5
from workers.replays import DatasetError, open_dataset, resolve_dataset_path, save_upload


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "team").mkdir(parents=True)
    write_npz_dataset(tmp_path / "allowed" / "team" / "d.npz", episodes=1, steps=2)
    write_npz_dataset(tmp_path / "outside.npz", episodes=1, steps=2)
    return tmp_path / "allowed"


def test_resolves_inside_the_root(root: Path) -> None:
    assert resolve_dataset_path("team/d.npz", root) == (root / "team" / "d.npz").resolve()
    assert resolve_dataset_path("team/../team/d.npz", root) == (root / "team" / "d.npz").resolve()


@pytest.mark.parametrize("name", ["../outside.npz", "team/../../outside.npz", "/etc/passwd", "..", ".", ""])
def test_refuses_escapes(root: Path, name: str) -> None:
    with pytest.raises(DatasetError) as info:
        resolve_dataset_path(name, root)
    assert info.value.field == "dataset"


def test_refuses_symlink_out_of_the_root(root: Path) -> None:
    os.symlink(root.parent / "outside.npz", root / "team" / "link.npz")
    os.symlink(root.parent, root / "up")
    for name in ("team/link.npz", "up/outside.npz"):
        with pytest.raises(DatasetError, match="outside the allowed root"):
            resolve_dataset_path(name, root)


def test_missing_dataset_and_root(root: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        resolve_dataset_path("team/nope.npz", root)
    with pytest.raises(DatasetError, match="root"):
        resolve_dataset_path("d.npz", root / "no-such-root")


def _zip_dir(src: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + str(path.relative_to(src)))
    return buf.getvalue()


def _tar(entries: list, mode: str = "w:gz") -> bytes:
    return tar_bytes(entries, mode)


def test_zip_of_a_lerobot_directory(tmp_path: Path) -> None:
    rec = write_lerobot_v30(tmp_path / "src", episodes=2)
    out = save_upload(io.BytesIO(_zip_dir(tmp_path / "src", "my_dataset/")), "my_dataset.zip", tmp_path / "up")
    assert out.is_dir() and (tmp_path / "up") in out.parents
    assert open_dataset(out).validate() == rec.total_steps


def test_tar_gz_and_plain_files(tmp_path: Path) -> None:
    write_robomimic_hdf5(tmp_path / "d.hdf5", episodes=1)
    files = {p.name: p.read_bytes() for p in [tmp_path / "d.hdf5"]}
    out = save_upload(io.BytesIO(_tar([("ds/d.hdf5", files["d.hdf5"])])), "x.tar.gz", tmp_path / "up")
    assert (out / "ds" / "d.hdf5").read_bytes() == files["d.hdf5"]
    saved = save_upload(io.BytesIO(files["d.hdf5"]), "C:\\Users\\me\\demo.HDF5", tmp_path / "up")
    assert saved.suffix == ".hdf5" and open_dataset(saved).count_steps() == 10
    write_npz_dataset(tmp_path / "d.npz", episodes=1, steps=3)
    saved = save_upload((tmp_path / "d.npz").open("rb"), "../../d.npz", tmp_path / "up")
    assert (tmp_path / "up") in saved.parents and open_dataset(saved).count_steps() == 3


def _members_zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"data")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "..\\evil.txt",
                                  "C:/evil.txt"])
def test_zip_traversal_is_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "a" / "b" / "up"
    with pytest.raises(DatasetError, match="unsafe path"):
        save_upload(io.BytesIO(_members_zip(["fine.txt", name])), "d.zip", dest)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not any(dest.iterdir())  # the partial upload was removed


def test_tar_traversal_and_links_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unsafe path"):
        save_upload(io.BytesIO(_tar([("../evil.txt", b"x")], "w")), "d.tar", tmp_path / "up")
    link = tarfile.TarInfo("ds/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(DatasetError, match="link or special file"):
        save_upload(io.BytesIO(_tar([link])), "d.tgz", tmp_path / "up")
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("link"))


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("ds/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="link or special file"):
        save_upload(io.BytesIO(buf.getvalue()), "d.zip", tmp_path / "up")


def test_bad_uploads(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unsupported upload"):
        save_upload(io.BytesIO(b"x"), "evil.exe", tmp_path / "up")
    with pytest.raises(DatasetError, match="larger than"):
        save_upload(io.BytesIO(b"x" * 100), "d.npz", tmp_path / "up", max_bytes=10)
    with pytest.raises(DatasetError, match="unpacks to more than"):
        save_upload(io.BytesIO(_members_zip(["a.txt", "b.txt"])), "d.zip", tmp_path / "up", max_extracted_bytes=6)
    data = _members_zip(["a.txt", "b.txt", "c.txt"])
    with pytest.raises(DatasetError, match="corrupt or unsupported zip"):
        save_upload(io.BytesIO(data[: len(data) // 2]), "d.zip", tmp_path / "up")
    with pytest.raises(DatasetError, match="empty"):
        save_upload(io.BytesIO(b""), "d.npz", tmp_path / "up")
    assert not any((tmp_path / "up").iterdir())
