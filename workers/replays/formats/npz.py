"""Reader for our own NPZ format (see workers/replays/FORMAT.md).

Array headers are read straight from the zip members, so validation checks every shape without
decompressing the image array. Image arrays stored uncompressed (np.savez) are memory-mapped, so a slice
of a replay reads only its own rows; compressed ones (np.savez_compressed) and the small arrays are
loaded whole, once per open dataset.
"""
from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workers.replays.errors import DatasetError, reason
from workers.replays.formats.base import Dataset, EpisodeInfo, Selection, Step


class NpzDataset(Dataset):
    format = "npz"

    def __init__(self, path: Path):
        super().__init__(path)
        self._headers = _headers(self.path)
        self._arrays: dict[str, np.ndarray] = {}
        self._cams = {("image" if k == "images" else k[len("images_"):]): k
                      for k in self._headers if k == "images" or k.startswith("images_")}
        self._n = self._check_headers()
        episode_index = self._load("episode_index") if "episode_index" in self._headers \
            else np.zeros(self._n, dtype=np.int64)
        self._rows = {int(e): np.flatnonzero(episode_index == e) for e in np.unique(episode_index)}
        texts = self._instructions()
        self._infos = {e: EpisodeInfo(e, len(rows), texts[rows[0]], sorted(self._cams))
                       for e, rows in self._rows.items()}

    def _check_headers(self) -> int:
        if not self._cams:
            raise DatasetError("images", "missing array 'images' (N, H, W, 3) uint8")
        for key in ("actions", "instruction"):
            if key not in self._headers:
                raise DatasetError(key, f"missing array {key!r}")
        shape, dtype = self._headers["actions"]
        if len(shape) != 2:
            raise DatasetError("actions", f"must be (N, D), got {shape}")
        n = shape[0]
        for key, (shape, dtype) in self._headers.items():
            if key in self._cams.values() and (dtype != np.uint8 or len(shape) != 4 or shape[3] != 3):
                raise DatasetError(key, f"must be uint8 (N, H, W, 3), got {shape} {dtype}")
            if key in ("state", "episode_index", *self._cams.values()) and shape[0] != n:
                raise DatasetError(key, f"has {shape[0]} rows but 'actions' has {n}")
        if self._headers["instruction"][0] not in ((), (1,), (n,)):
            raise DatasetError("instruction", f"must be one string or one per step ({n}), "
                                              f"got shape {self._headers['instruction'][0]}")
        return n

    def _instructions(self) -> list[str]:
        arr = self._load("instruction")
        if arr.dtype.kind not in "US":
            raise DatasetError("instruction", f"must be a string array, got {arr.dtype}")
        flat = [str(x) for x in arr.reshape(-1)]
        return flat * self._n if len(flat) == 1 else flat

    def _load(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            try:
                mapped = _map_member(self.path, key) if key in self._cams.values() else None
                if mapped is not None:
                    self._arrays[key] = mapped
                    return mapped
                with np.load(self.path, allow_pickle=False) as npz:  # never unpickle an upload
                    self._arrays[key] = npz[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, struct.error) as exc:
                detail = reason(exc, self.path)
                raise DatasetError(key, f"corrupt or truncated array in {self.path.name} ({detail})") from None
        return self._arrays[key]

    def close(self) -> None:
        self._arrays.clear()  # drops the memory maps with the arrays

    def episodes(self) -> list[EpisodeInfo]:
        return list(self._infos.values())

    def _iter_episode(self, sel: Selection) -> Iterator[Step]:
        rows = self._rows[sel.info.index][sel.start:sel.stop]
        actions = self._load("actions")
        state = self._load("state") if "state" in self._headers else None
        texts = self._instructions()
        images = {cam: self._load(key) for cam, key in self._cams.items()}
        for i, row in enumerate(rows):
            yield Step(sel.info.index, sel.start + i, {c: np.ascontiguousarray(a[row]) for c, a in images.items()},
                       texts[row], None if state is None else np.asarray(state[row], dtype=np.float32).reshape(-1),
                       np.asarray(actions[row], dtype=np.float32))


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of each .npy member, read from its header only."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fh:
                    shape, dtype = _read_header(fh)
                out[name[:-4]] = (tuple(shape), np.dtype(dtype))
            return out
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(path.name, f"corrupt or truncated NPZ file ({reason(exc, path)})") from None


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (APPNOTE 4.3.7), 30 bytes


def _map_member(path: Path, key: str) -> np.ndarray | None:
    """A read-only memory map over an uncompressed, C-ordered .npy member, or None where one cannot be made
    (compressed, encrypted, Fortran order): the caller then loads the array whole.

    Each slice of a replay opens the dataset afresh and wants a few hundred rows: reading a multi-GB image
    array whole for each would cost O(steps^2) I/O over a replay. Raises ValueError/OSError on a file whose
    bytes do not match its headers (truncated), which the caller reports as a corrupt dataset."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise ValueError(f"bad local header for member {key}.npy")
            start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]  # + name + extra field
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
            offset = fh.tell()
    if fortran or dtype.hasobject or not all(shape):
        return None
    if offset - start + int(np.prod(shape)) * dtype.itemsize > info.file_size:
        raise ValueError(f"member {key}.npy is shorter than its header says")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))


def _read_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), np.dtype(dtype)
