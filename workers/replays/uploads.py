"""Store an uploaded dataset (multipart body) on disk, unpacking archives safely.

Archives are untrusted: members with absolute paths, "..", links or device entries are refused, and
sizes are capped (a zip bomb must not fill the disk). Members are copied out by hand rather than with
extractall, so nothing an archive says can make us write outside `dest_dir`.
"""
from __future__ import annotations

import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from workers.replays.errors import DatasetError, reason

FILE_SUFFIXES = (".hdf5", ".h5", ".npz")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_UPLOAD_BYTES = 4 * 1024**3
MAX_EXTRACTED_BYTES = 16 * 1024**3
MAX_MEMBERS = 200_000
_CHUNK = 1 << 20


def save_upload(stream: BinaryIO, filename: str, dest_dir: Path, *, max_bytes: int = MAX_UPLOAD_BYTES,
                max_extracted_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Write the upload under a fresh folder in `dest_dir`; return the file or the unpacked folder."""
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    suffix = _suffix(name)
    target = Path(dest_dir) / uuid.uuid4().hex
    target.mkdir(parents=True)
    try:
        raw = target / ("upload" + suffix)
        _copy_limited(stream, raw, max_bytes)
        if suffix in FILE_SUFFIXES:
            return raw
        out = target / "dataset"
        out.mkdir()
        if suffix == ".zip":
            _extract_zip(raw, out, max_extracted_bytes)
        else:
            _extract_tar(raw, out, max_extracted_bytes)
        raw.unlink()
        return out
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


def _member_path(out: Path, name: str) -> Path:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        raise DatasetError("file", f"archive member {name!r} has an unsafe path")
    return out.joinpath(*parts)


def _extract_zip(raw: Path, out: Path, limit: int) -> None:
    try:
        with zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
            _check_counts(len(infos), sum(i.file_size for i in infos), limit)
            budget = [limit]
            for info in infos:
                path = _member_path(out, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DatasetError("file", f"archive member {info.filename!r} is a symlink")
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as src:
                    _write_member(src, path, budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise DatasetError("file", f"corrupt or truncated zip archive ({reason(exc, out, raw)})") from None


def _extract_tar(raw: Path, out: Path, limit: int) -> None:
    try:
        with tarfile.open(raw, "r:*") as tf:
            members = tf.getmembers()
            _check_counts(len(members), sum(m.size for m in members if m.isfile()), limit)
            budget = [limit]
            for member in members:
                path = _member_path(out, member.name)
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tf.extractfile(member)
                    _write_member(src, path, budget)
                else:
                    raise DatasetError("file", f"archive member {member.name!r} is a link or special file")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError("file", f"corrupt or truncated tar archive ({reason(exc, out, raw)})") from None


def _check_counts(members: int, declared: int, limit: int) -> None:
    if members > MAX_MEMBERS:
        raise DatasetError("file", f"archive has more than {MAX_MEMBERS} members")
    if declared > limit:
        raise DatasetError("file", f"archive unpacks to more than {limit} bytes")


def _write_member(src: BinaryIO, path: Path, budget: list[int]) -> None:
    # Declared sizes can lie: count what is actually written against the budget too.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise DatasetError("file", "archive unpacks to more than the allowed size")
            out.write(chunk)


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
