"""Hostile archives: nothing is ever written outside the upload's own folder, and every refusal is a
DatasetError (a 4xx at the edge) that leaves nothing behind.

The corpus has each case the security issue names, for zip, tar, tar.gz and xz, plus a property test that
generates member names from the dangerous alphabet and asserts containment of whatever is accepted.
"""
from __future__ import annotations

import io
import lzma
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workers.replays.writers import tar_bytes
from workers.replays import DatasetError, save_upload
from workers.replays.archive import MAX_MEMBERS, member_parts


def _zip(entries: list[tuple[str, bytes] | zipfile.ZipInfo], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                zf.writestr(entry, b"payload")
            else:
                zf.writestr(zipfile.ZipInfo(entry[0]), entry[1], compress_type=method)
    return buf.getvalue()


def _tar(entries: list, mode: str = "w") -> bytes:
    return tar_bytes(entries, mode)


def _tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _files_outside(root: Path, upload_dir: Path) -> set[Path]:
    return {p for p in root.rglob("*") if upload_dir not in p.parents and p != upload_dir}


def _escapes(outside: Path) -> list[str]:
    """Names that a naive join would land in `outside` (an absolute folder) or above the upload folder."""
    a = str(outside / "x").lstrip("/")
    return [f"/{a}", f"//{a}", f"///{a}", f"\\\\{a}", f"\\{a}".replace("/", "\\"), f"C:/{a}", f"C:\\{a}",
            f"\\\\?\\C:\\{a}", f"\\\\server\\share\\{a}", "../x", "ok/../../x", "ok/..", "a/./../../x",
            "..\\x", "ok\\..\\..\\x", "x\x00.txt", "ds/evil:stream", "a//b", "", "/", "\x1b[31m.txt"]


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    return tmp_path, outside


def _refused(data: bytes, filename: str, tmp: Path, match: str | None = None) -> None:
    up = tmp / "up"
    before = _files_outside(tmp, up)
    with pytest.raises(DatasetError) as info:
        save_upload(io.BytesIO(data), filename, up)
    assert info.value.field == "file"
    if match:
        assert match in info.value.message
    assert _files_outside(tmp, up) == before, "something was written outside the upload folder"
    assert not up.exists() or not any(up.iterdir()), "a refused upload left files behind"


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_escaping_names_are_refused_for_every_format(box: tuple[Path, Path], kind: str) -> None:
    tmp, outside = box
    for name in _escapes(outside):
        if "\x00" in name:
            continue  # zipfile and tarfile themselves cut a name at NUL on reading ("x"), which is harmless
        if kind == "zip":
            data = _zip([("fine.txt", b"ok"), (name, b"evil")])
        else:
            data = _tar([("fine.txt", b"ok"), (name, b"evil")], "w:gz" if kind == "tar.gz" else "w")
        _refused(data, f"d.{kind}", tmp)
        assert not list(outside.iterdir()), name


def test_links_devices_and_fifos_are_refused(box: tuple[Path, Path]) -> None:
    tmp, outside = box
    cases = [_tar_special("ds/l", tarfile.SYMTYPE, str(outside)), _tar_special("ds/h", tarfile.LNKTYPE, "/etc/passwd"),
             _tar_special("ds/c", tarfile.CHRTYPE), _tar_special("ds/b", tarfile.BLKTYPE),
             _tar_special("ds/f", tarfile.FIFOTYPE)]
    for info in cases:
        _refused(_tar([info]), "d.tar", tmp, "link or special file")
        # A link first, then a file written "through" it: refused at the link, before anything is written.
        _refused(_tar([info, ("ds/l/x", b"evil")], "w:gz"), "d.tgz", tmp, "link or special file")
    for mode in (0o120777, 0o020644, 0o010644, 0o060644):  # symlink, char device, FIFO, block device
        zinfo = zipfile.ZipInfo("ds/special")
        zinfo.external_attr = mode << 16
        _refused(_zip([zinfo]), "d.zip", tmp, "link or special file")
    assert not list(outside.iterdir())


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_duplicate_names_are_refused(box: tuple[Path, Path], kind: str) -> None:
    tmp, _ = box
    entries = [("ds/a.json", b"{}"), ("ds/a.json", b"overwritten")]
    with pytest.warns(UserWarning) if kind == "zip" else _nothing():
        data = _zip(entries) if kind == "zip" else _tar(entries)
    _refused(data, f"d.{kind}", tmp, "more than once")
    _refused(_zip([("ds/a", b"f"), ("ds/./a", b"g")]), "d.zip", tmp, "more than once")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_member_count_cap_is_checked_before_parsing(box: tuple[Path, Path]) -> None:
    tmp, _ = box
    many = [(f"m{i}", b"") for i in range(100_000)]
    _refused(_zip(many), "d.zip", tmp, f"more than {MAX_MEMBERS} members")
    _refused(_tar(many, "w:gz"), "d.tar.gz", tmp, f"more than {MAX_MEMBERS} members")


def test_ratio_bombs_are_refused(box: tuple[Path, Path]) -> None:
    tmp, _ = box
    zeros = b"\0" * (64 * 1024**2)
    _refused(_zip([("ds/bomb.bin", zeros)], zipfile.ZIP_DEFLATED), "d.zip", tmp, "compression bomb")
    _refused(_tar([("ds/bomb.bin", zeros)], "w:gz"), "d.tgz", tmp, "compression bomb")
    # Declared sizes over the byte cap are refused before a byte is decompressed.
    up = tmp / "up"
    with pytest.raises(DatasetError, match="unpacks to more than"):
        save_upload(io.BytesIO(_tar([("ds/a.bin", b"x" * 4096)], "w:gz")), "d.tgz", up, max_extracted_bytes=1000)


def test_nested_archives_and_xz_are_refused(box: tuple[Path, Path]) -> None:
    tmp, _ = box
    inner = _zip([("../../escape.txt", b"evil")])
    _refused(_zip([("ds/inner.zip", inner)]), "d.zip", tmp, "itself an archive")
    _refused(_tar([("ds/inner.tar.gz", _tar([("a", b"b")], "w:gz"))]), "d.tar", tmp, "itself an archive")
    xz = lzma.compress(_tar([("ds/a.json", b"{}")]))
    _refused(xz, "d.tar.xz", tmp, "unsupported upload")
    _refused(xz, "d.tar", tmp, "corrupt or unsupported tar")  # the suffix decides, never the content
    _refused(xz, "d.tgz", tmp, "corrupt or unsupported tar")


def test_encrypted_and_garbage_archives(box: tuple[Path, Path]) -> None:
    tmp, _ = box
    zinfo = zipfile.ZipInfo("ds/secret.bin")
    data = bytearray(_zip([zinfo]))
    # Set the "encrypted" flag in both the local header and the central directory entry.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(sig)
        off = 6 if sig == b"PK\x03\x04" else 8
        data[at + off] |= 1
    _refused(bytes(data), "d.zip", tmp)
    _refused(os.urandom(4096), "d.zip", tmp, "corrupt or unsupported zip")
    _refused(os.urandom(4096), "d.tar.gz", tmp, "corrupt or unsupported tar")


def test_safe_archives_still_unpack(tmp_path: Path) -> None:
    entries = [("./", b""), ("./ds/meta/info.json", b"{}"), ("ds/data/chunk-000/ep.parquet", b"pq")]
    out = save_upload(io.BytesIO(_tar([e for e in entries if e[0] != "./"], "w:gz")), "d.tgz", tmp_path / "up")
    assert (out / "ds" / "meta" / "info.json").read_bytes() == b"{}"
    dir_entry = tarfile.TarInfo("./")
    dir_entry.type = tarfile.DIRTYPE
    out = save_upload(io.BytesIO(_tar([dir_entry, ("./ds/x.json", b"1")])), "d.tar", tmp_path / "up")
    assert (out / "ds" / "x.json").read_bytes() == b"1"


_PIECES = st.sampled_from(["a", "b.json", ".", "..", "", "/", "//", "\\", "\\\\", "C:", "c:", ":", "~",
                           "\x00", "\n", "?", "tmp", "...", ". ", " ..", "..."])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.tuples(_PIECES, st.sampled_from(["/", "\\", ""])), min_size=1, max_size=6),
       kind=st.sampled_from(["zip", "tar"]))
def test_property_whatever_the_name_nothing_escapes(tmp_path: Path, pieces: list[tuple[str, str]],
                                                     kind: str) -> None:
    name = "".join(p + sep for p, sep in pieces)
    case = tmp_path / os.urandom(6).hex()
    up = case / "up"
    case.mkdir()
    data = _zip([(name, b"x")]) if kind == "zip" else _tar([(name, b"x")])
    try:
        out = save_upload(io.BytesIO(data), f"d.{kind}", up)
    except DatasetError:
        assert not up.exists() or not any(up.iterdir())
        return
    real_out = Path(os.path.realpath(out))
    for path in up.rglob("*"):
        assert Path(os.path.realpath(path)).is_relative_to(real_out.parent)


def test_member_parts_examples() -> None:
    assert member_parts("ds/a/b.json") == ("ds", "a", "b.json")
    assert member_parts("./ds/") == ("ds",)
    assert member_parts("./") == ()
    for bad in ("//tmp/x", "\\\\tmp\\x", "/etc/passwd", "C:x", "a/../b", "..", "a\x00b", "a//b", ""):
        with pytest.raises(DatasetError):
            member_parts(bad)
