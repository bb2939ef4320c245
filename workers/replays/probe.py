"""Unpack and check a customer's dataset in a process of its own, under hard limits: `python -m
workers.replays.probe` reads one JSON request on stdin and writes one JSON answer on stdout.

The web runs this instead of opening uploads itself, so a decompression bomb, a pathological HDF5 file or a
parser bug costs at most this child: its address space (RLIMIT_AS), CPU time (RLIMIT_CPU), file sizes it may
write (RLIMIT_FSIZE, above the extraction cap) and open files are capped before any customer byte is read,
and the parent kills it at a wall-clock limit. The answer reports the child's own peak memory.

Request:  {"path", "uploaded", "archive": null | "zip" | "tar" | "gz", "max_extracted_bytes", "episodes",
           "step_range", "instruction", "memory_mb", "cpu_seconds"}
Answer:   {"ok": true, "path", "format", "total", "cameras", "robot_type", "maxrss_kb"}
          or {"ok": false, "field", "message", "maxrss_kb"}
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

# Key frames the probe decodes, over all selected video files, to find a stream that changes size mid-way;
# past it (a very long dataset) the worker's per-frame check is what refuses, at the step.
PROBE_KEYFRAMES = 20_000


def _limit(memory_mb: int, cpu_seconds: float, max_file_bytes: int) -> None:
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = max(1, int(cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _unpack(path: Path, archive: str | None, max_bytes: int) -> Path:
    """The raw upload unpacked next to it (uploads.unpack); a zip's central directory is judged first."""
    from workers.replays.uploads import unpack

    if archive == "zip":
        _check_zip_container(path, max_bytes)  # what the central directory declares, before inflating
    return unpack(path, archive, max_bytes)


def _check_zip_container(path: Path, max_bytes: int) -> None:
    """An NPZ is a zip: its members' declared sizes are read from the central directory (cheap) and held
    to the rules archives are unpacked under, before any member is inflated. A member that inflates
    beyond what it declared fails in zipfile's own CRC/size checks."""
    import zipfile

    from workers.replays.archive import MAX_MEMBERS, MAX_RATIO, RATIO_FLOOR, _zip_declared_count
    from workers.replays.errors import DatasetError

    if _zip_declared_count(path) > MAX_MEMBERS:  # from the end record, before the index is parsed
        raise DatasetError("file", f"{path.name} has more than {MAX_MEMBERS} members")
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a (readable) zip: the reader that opens it says what is wrong
    if declared > max_bytes:
        raise DatasetError("file", f"{path.name} inflates to {declared} bytes; at most {max_bytes} allowed")
    if declared > RATIO_FLOOR and declared > MAX_RATIO * path.stat().st_size:
        raise DatasetError("file", f"{path.name} expands more than {MAX_RATIO}:1; refusing a compression bomb")


def _frame_shapes(ds: Any, episodes: list[int] | None, step_range: tuple | None,
                  headers_only: bool) -> list[tuple[int, ...]]:
    """The frame shapes a replay will decode: from array headers where the format has them (NPZ, HDF5:
    every frame of an array has its shape), else from the first selected step. Video streams are also held
    to the cap from every selected file's header, and every frame as it is decoded (a stream may change size
    mid-way: workers/replays/formats/video.py); still-image files are capped one by one when decoded."""
    if ds.format == "npz":
        from workers.replays.formats.npz import _headers

        return [shape for key, (shape, _) in _headers(ds.path).items() if key == "images" or key.startswith("images_")]
    if ds.format == "robomimic":
        import h5py

        shapes: list[tuple[int, ...]] = []
        with h5py.File(ds.path, "r") as fh:
            fh.visititems(lambda _, obj: shapes.append(obj.shape)
                          if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
        return shapes
    if headers_only:
        return []
    step = next(iter(ds.iter_steps(episodes, step_range)), None)
    return [img.shape for img in step.images.values()] if step is not None else []


def _check_frames(ds: Any, episodes: list[int] | None, step_range: tuple | None, *, headers_only: bool) -> None:
    from workers.replays.errors import DatasetError
    from workers.replays.formats.images import MAX_PIXELS

    if not headers_only and ds.format in ("npz", "robomimic"):
        return  # checked from the headers already
    if not headers_only and hasattr(ds, "check_video_headers"):
        # The size every selected video declares, and its key frames' (where a stream changes size).
        ds.check_video_headers(episodes, PROBE_KEYFRAMES)
    for shape in _frame_shapes(ds, episodes, step_range, headers_only):
        if len(shape) >= 3 and shape[-3] * shape[-2] > MAX_PIXELS:
            raise DatasetError("images", f"frames are {shape[-2]}x{shape[-3]}; at most {MAX_PIXELS} pixels each")


def check(req: dict[str, Any]) -> dict[str, Any]:
    from workers.replays.formats import open_dataset

    path = _unpack(Path(req["path"]), req.get("archive"), int(req["max_extracted_bytes"]))
    if req.get("uploaded") and path.is_file():  # an operator's own NPZ on the server may be any size
        _check_zip_container(path, int(req["max_extracted_bytes"]))
    step_range = tuple(req["step_range"]) if req.get("step_range") else None
    with open_dataset(path, instruction=req.get("instruction")) as ds:
        _check_frames(ds, None, None, headers_only=True)  # before validate, which may load arrays
        total = ds.validate(req.get("episodes"), step_range)
        _check_frames(ds, req.get("episodes"), step_range, headers_only=False)
        cameras = sorted({c for sel in ds.select(req.get("episodes"), step_range) for c in sel.info.cameras})
        return {"ok": True, "path": str(path), "format": ds.format, "total": total, "cameras": cameras,
                "robot_type": ds.robot_type}


def run(req: dict[str, Any]) -> dict[str, Any]:
    """Limit this process, then check: meant to run in a child that exits afterwards (limits stay set)."""
    _limit(int(req["memory_mb"]), float(req["cpu_seconds"]), int(req["max_extracted_bytes"]) + (1 << 20))
    from workers.replays.errors import DatasetError

    try:
        out = check(req)
    except DatasetError as exc:
        out = {"ok": False, "field": exc.field, "message": exc.message}
    except MemoryError:
        out = {"ok": False, "field": "file", "message": "reading this dataset needs more memory than allowed"}
    except Exception as exc:  # a parser's surprise is the file's fault here: refuse it, say what kind
        out = {"ok": False, "field": "file", "message": f"the dataset could not be read ({type(exc).__name__})"}
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def child(conn: Any, req: dict[str, Any]) -> None:
    """Entry point of a forked probe (multiprocessing): the answer goes back through `conn`."""
    conn.send(run(req))
    conn.close()


def main() -> None:
    sys.stdout.write(json.dumps(run(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
