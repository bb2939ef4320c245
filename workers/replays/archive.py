"""Unpack an untrusted zip or tar archive without ever writing outside its destination folder.

Containment is by construction, in four independent layers, so one mistake cannot open the host:

1. member names are judged as text: absolute, double-slash, backslash, drive, UNC and `..` names, control
   characters and over-long parts are refused, never "cleaned";
2. the joined path is resolved (`realpath`) and must lie strictly inside the resolved destination;
3. only regular files and directories are written, never links, devices or FIFOs, and every file is created
   with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a duplicate name or a link in the way fails instead of following;
4. the work is capped before and while it happens: member count (read from the archive's index before it is
   parsed), declared and actual unpacked bytes, the compression ratio, and wall time.

Nested archives are refused rather than left as a trap for whoever unpacks them next.
"""
from __future__ import annotations

import os
import struct
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from workers.replays.errors import DatasetError, reason

MAX_MEMBERS = 20_000
MAX_NAME_CHARS = 1024
MAX_PART_BYTES = 255
# Past the first RATIO_FLOOR bytes, unpacking more than MAX_RATIO times the archive's size is a bomb.
MAX_RATIO = 200
RATIO_FLOOR = 32 * 1024**2
MAX_SECONDS = 120.0
NESTED_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".gz", ".xz", ".bz2", ".7z", ".rar", ".zst")
_CHUNK = 1 << 20
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000


@dataclass
class Budget:
    """What one extraction may still spend; shared by every member of the archive."""

    max_bytes: int
    archive_bytes: int
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_SECONDS)
    written: int = 0

    def spend(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise DatasetError("file", f"archive unpacks to more than {self.max_bytes} bytes")
        if self.written > RATIO_FLOOR and self.written > MAX_RATIO * self.archive_bytes:
            raise DatasetError("file", f"archive expands more than {MAX_RATIO}:1; refusing a compression bomb")
        if time.monotonic() > self.deadline:
            raise DatasetError("file", f"archive took longer than {MAX_SECONDS:.0f} s to unpack")


def member_parts(name: str) -> tuple[str, ...]:
    """The path parts of an archive member's name, or DatasetError if the name is unsafe in any way.

    Returns () for the archive's own root (`./`), which has nothing to create.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise _unsafe(name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or "\\" in name or name.startswith("/"):
        raise _unsafe(name)
    body = name[:-1] if name.endswith("/") else name
    parts = body.split("/")
    if any(p in ("", "..") or ":" in p or len(p.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES
           for p in parts):
        raise _unsafe(name)
    return tuple(p for p in parts if p != ".")


def _unsafe(name: object) -> DatasetError:
    return DatasetError("file", f"archive member {str(name)[:200]!r} has an unsafe path")


def contained_path(root: Path, parts: tuple[str, ...], name: str) -> Path:
    """`root` joined with `parts`, resolved; refused unless it lies strictly inside `root`."""
    real_root = Path(os.path.realpath(root))
    path = Path(os.path.realpath(real_root.joinpath(*parts)))
    if path == real_root or not path.is_relative_to(real_root):
        raise _unsafe(name)
    return path


class _Extraction:
    """One archive's members written under `root`, each name at most once."""

    def __init__(self, root: Path, budget: Budget):
        self.root, self.budget = root, budget
        self.seen: set[tuple[str, ...]] = set()
        self.count = 0

    def admit(self, name: str, declared_size: int) -> tuple[str, ...]:
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise DatasetError("file", f"archive has more than {MAX_MEMBERS} members")
        parts = member_parts(name)
        if parts in self.seen:
            raise DatasetError("file", f"archive member {name[:200]!r} appears more than once")
        self.seen.add(parts)
        if declared_size > self.budget.max_bytes:
            raise DatasetError("file", f"archive unpacks to more than {self.budget.max_bytes} bytes")
        return parts

    def make_dir(self, parts: tuple[str, ...], name: str) -> None:
        if parts:
            contained_path(self.root, parts, name).mkdir(parents=True, exist_ok=True)

    def write_file(self, parts: tuple[str, ...], name: str, src: BinaryIO) -> None:
        if not parts:
            raise _unsafe(name)
        if parts[-1].lower().endswith(NESTED_SUFFIXES):
            raise DatasetError("file", f"archive member {name[:200]!r} is itself an archive; upload its contents")
        path = contained_path(self.root, parts, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Checked again after mkdir: the parent chain is ours, made of real directories, but be certain.
        path = contained_path(self.root, parts, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise DatasetError("file", f"archive member {name[:200]!r} appears more than once") from None
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.budget.spend(len(chunk))
                out.write(chunk)


def extract_zip(raw: Path, out: Path, max_bytes: int) -> None:
    """Unpack `raw` (a zip) into the existing, empty folder `out`."""
    try:
        if _zip_declared_count(raw) > MAX_MEMBERS:
            raise DatasetError("file", f"archive has more than {MAX_MEMBERS} members")
        job = _Extraction(out, Budget(max_bytes, raw.stat().st_size))
        with zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > max_bytes:
                raise DatasetError("file", f"archive unpacks to more than {max_bytes} bytes")
            for info in infos:
                parts = job.admit(info.filename, info.file_size)
                kind = (info.external_attr >> 16) & _S_IFMT
                if kind not in (0, _S_IFREG, _S_IFDIR):
                    raise DatasetError("file", f"archive member {info.filename[:200]!r} is a link or special file")
                if info.flag_bits & 0x1:
                    raise DatasetError("file", f"archive member {info.filename[:200]!r} is encrypted")
                if info.is_dir() or kind == _S_IFDIR:
                    job.make_dir(parts, info.filename)
                    continue
                with zf.open(info) as src:
                    job.write_file(parts, info.filename, src)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
            RuntimeError, ValueError, struct.error) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError("file", f"corrupt or unsupported zip archive ({reason(exc, out, raw)})") from None


def _zip_declared_count(raw: Path) -> int:
    """The member count in the zip's end-of-central-directory record, read before the index is parsed."""
    size = raw.stat().st_size
    with raw.open("rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return 0  # not a zip: let ZipFile say so
    (count,) = struct.unpack_from("<H", tail, at + 10)
    return MAX_MEMBERS + 1 if count == 0xFFFF else count  # 0xFFFF: zip64, at least 65535 members


def extract_tar(raw: Path, out: Path, max_bytes: int, *, compression: str) -> None:
    """Unpack `raw` (a tar; `compression` is "" or "gz", fixed by the file name, never sniffed)."""
    try:
        with tarfile.open(raw, f"r:{compression}") as tf:
            members = _scan_tar(tf, max_bytes)
            job = _Extraction(out, Budget(max_bytes, raw.stat().st_size))
            for member in members:
                parts = job.admit(member.name, member.size)
                if member.isdir():
                    job.make_dir(parts, member.name)
                else:
                    src = tf.extractfile(member)
                    job.write_file(parts, member.name, src)
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError("file", f"corrupt or unsupported tar archive ({reason(exc, out, raw)})") from None


def _scan_tar(tf: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every header, checked before anything is written; stops at the first cap it crosses."""
    members, declared = [], 0
    deadline = time.monotonic() + MAX_SECONDS
    while (member := tf.next()) is not None:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise DatasetError("file", f"archive has more than {MAX_MEMBERS} members")
        if not (member.isfile() or member.isdir()):
            raise DatasetError("file", f"archive member {member.name[:200]!r} is a link or special file")
        member_parts(member.name)
        declared += member.size if member.isfile() else 0
        if declared > max_bytes:
            raise DatasetError("file", f"archive unpacks to more than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise DatasetError("file", f"archive took longer than {MAX_SECONDS:.0f} s to read")
    return members
