"""Store an uploaded dataset (multipart body) on disk, unpacking archives with `archive` (contained by
construction: see that module). A failed upload leaves nothing behind.
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from workers.replays.archive import extract_tar, extract_zip
from workers.replays.errors import DatasetError

FILE_SUFFIXES = (".hdf5", ".h5", ".npz")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_UPLOAD_BYTES = 2 * 1024**3
MAX_EXTRACTED_BYTES = 4 * 1024**3
_CHUNK = 1 << 20


def save_upload(stream: BinaryIO, filename: str, dest_dir: Path, *, max_bytes: int = MAX_UPLOAD_BYTES,
                max_extracted_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Copy and unpack in this process: the file, or the unpacked folder. (The web copies with `save_raw` and
    leaves unpacking to a bounded child process, workers/replays/probe.py, which calls `unpack`.)"""
    raw, kind = save_raw(stream, filename, dest_dir, max_bytes)
    try:
        return unpack(raw, kind, max_extracted_bytes)
    except BaseException:
        shutil.rmtree(raw.parent, ignore_errors=True)
        raise


def unpack(raw: Path, kind: str | None, max_extracted_bytes: int) -> Path:
    """`raw` unpacked next to it as `dataset/` (archive.py: contained, counted, capped); a plain file as is."""
    if kind is None:
        return raw
    out = raw.parent / "dataset"
    out.mkdir()
    if kind == "zip":
        extract_zip(raw, out, max_extracted_bytes)
    else:
        extract_tar(raw, out, max_extracted_bytes, compression="" if kind == "tar" else "gz")
    raw.unlink()
    return out


ARCHIVE_KINDS = {".zip": "zip", ".tar": "tar", ".tar.gz": "gz", ".tgz": "gz"}


def save_raw(stream: BinaryIO, filename: str, dest_dir: Path, max_bytes: int) -> tuple[Path, str | None]:
    """Only copy the upload, under `max_bytes`, into a fresh folder: (the file, its archive kind or None).

    Unpacking and parsing are left to a bounded child process (workers.replays.probe)."""
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    suffix = _suffix(name)
    target = Path(dest_dir) / uuid.uuid4().hex
    target.mkdir(parents=True)
    try:
        raw = target / ("upload" + suffix)
        _copy_limited(stream, raw, max_bytes)
        return raw, ARCHIVE_KINDS.get(suffix)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _suffix(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES + FILE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    allowed = ", ".join(ARCHIVE_SUFFIXES + FILE_SUFFIXES)
    raise DatasetError("file", f"unsupported upload {name!r}; expected one of {allowed}")


def _copy_limited(src: BinaryIO, dest: Path, limit: int) -> int:
    total = 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise DatasetError("file", f"upload is larger than {limit} bytes")
            out.write(chunk)
    if total == 0:
        raise DatasetError("file", "upload is empty")
    return total


def discard_upload(upload_dir: Path, dataset: dict) -> None:
    """Delete an uploaded dataset once its replay has ended (results live in the database, not the file).

    Only the upload's own fresh folder (the first part of its path under `upload_dir`) is removed, and only
    if it really sits directly under `upload_dir`.
    """
    if dataset.get("root") != "upload" or not dataset.get("path"):
        return
    base = Path(upload_dir).resolve()
    folder = (base / PurePosixPath(dataset["path"]).parts[0]).resolve()
    if folder.parent == base and folder != base:
        shutil.rmtree(folder, ignore_errors=True)
