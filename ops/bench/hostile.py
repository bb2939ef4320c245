"""A corpus of hostile uploads, images and bodies, built in memory (ops/bench/abuse.py fires it; tests use
pieces of it). Each builder returns (filename, bytes) for an upload, or a request description."""
from __future__ import annotations

import base64
import io
import json
import struct
import tarfile
import zipfile
import zlib

import numpy as np

_ZEROS = bytes(1 << 20)


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz_bomb(rows: int = 40_000_000) -> tuple[str, bytes]:
    """An NPZ whose episode_index decompresses ~1000:1 (rows x 8 bytes of zeros) when the reader loads it;
    the other members carry headers only (the reader checks headers before loading)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("actions.npy", _npy_header((rows, 7), "<f4"))
        zf.writestr("images.npy", _npy_header((rows, 64, 64, 3), "|u1"))
        zf.writestr("instruction.npy", _npy_header((1,), "<U4") + "pick".encode("utf-32-le"))
        with zf.open("episode_index.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((rows,), "<i8"))
            left = rows * 8
            while left > 0:
                fh.write(_ZEROS[: min(left, len(_ZEROS))])
                left -= len(_ZEROS)
    return "bomb.npz", buf.getvalue()


def npz_pixel_bomb() -> tuple[str, bytes]:
    """An NPZ whose image array declares 10 frames of 20000x20000 (12 GB) in a few hundred bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("actions.npy", _npy_header((10, 7), "<f4") + bytes(280))
        zf.writestr("images.npy", _npy_header((10, 20_000, 20_000, 3), "|u1"))
        zf.writestr("instruction.npy", _npy_header((1,), "<U4") + "pick".encode("utf-32-le"))
    return "pixels.npz", buf.getvalue()


def zip_ratio_bomb(mb: int = 512) -> tuple[str, bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data/episodes.jsonl", "w",
                                                                         force_zip64=True) as fh:
        for _ in range(mb):
            fh.write(_ZEROS)
    return "ratio.zip", buf.getvalue()


def zip_many_members(n: int = 100_000) -> tuple[str, bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"m/{i}", b"")
    return "many.zip", buf.getvalue()


def zip_traversal() -> tuple[str, bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("//tmp/vlaapi-abuse-pwned.pth", b"import os\n")
        zf.writestr("../../escape.txt", b"x")
    return "traversal.zip", buf.getvalue()


def tar_xz_as_gz() -> tuple[str, bytes]:
    """xz data under a .tar.gz name: the suffix decides the codec, so it is refused, not sniffed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        info = tarfile.TarInfo("episodes.jsonl")
        info.size = 1 << 20
        tf.addfile(info, io.BytesIO(_ZEROS))
    return "sneaky.tar.gz", buf.getvalue()


def lerobot_format_bomb() -> tuple[str, bytes]:
    """LeRobot metadata whose path template asks str.format for a 2 GB padded field."""
    info = {"codebase_version": "v2.1", "fps": 10, "total_episodes": 1, "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:>2000000000}.parquet",
            "features": {"action": {"dtype": "float32", "shape": [7]}}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("meta/info.json", json.dumps(info))
        zf.writestr("meta/episodes.jsonl", json.dumps({"episode_index": 0, "length": 5, "tasks": ["x"]}) + "\n")
        zf.writestr("meta/tasks.jsonl", json.dumps({"task_index": 0, "task": "x"}) + "\n")
    return "lerobot-bomb.zip", buf.getvalue()


def hdf5_garbage() -> tuple[str, bytes]:
    rng = np.random.default_rng(0)
    return "garbage.hdf5", b"\x89HDF\r\n\x1a\n" + rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_pixel_bomb(side: int = 30_000) -> str:
    """A PNG declaring side x side pixels (2.7 GB decoded) in a few kilobytes: base64 for an image field."""
    return base64.b64encode(_png(side, side, zlib.compress(b"\0" * 4096))).decode()


def png_large_real(side: int = 4096) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def eps_image() -> str:
    return base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n").decode()


UPLOADS = {"npz ratio bomb (320 MB at 1000:1)": npz_bomb, "npz declaring 20000x20000 frames": npz_pixel_bomb,
           "zip ratio bomb (512 MB)": zip_ratio_bomb,
           "zip of 100k members": zip_many_members, "zip traversal (//tmp, ..)": zip_traversal,
           "tar.xz named .tar.gz": tar_xz_as_gz, "LeRobot str.format bomb": lerobot_format_bomb,
           "HDF5 magic + garbage": hdf5_garbage}
IMAGES = {"PNG declaring 30000x30000": png_pixel_bomb, "PNG 4096x4096 (real)": png_large_real,
          "EPS (Ghostscript format)": eps_image}
