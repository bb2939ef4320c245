"""Decode the frames of an MP4 file at given timestamps (LeRobot's video features), with PyAV.

PyAV bundles its own FFmpeg (H.264, HEVC, AV1 through dav1d, MPEG-4), so no system codec is needed.
torchvision's video reader is not a fallback: it was removed from torchvision in favour of torchcodec.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from workers.replays.errors import DatasetError, reason

try:  # an optional dependency: datasets with images stored in parquet/HDF5/NPZ work without it
    import av
except ImportError:  # pragma: no cover - exercised only where PyAV is missing
    av = None


def video_supported() -> bool:
    return av is not None


def decode_frames(path: Path, timestamps: Sequence[float], fps: float, where: str) -> Iterator[np.ndarray]:
    """Yield one HxWx3 uint8 frame per timestamp (seconds from the file's start, ascending)."""
    if av is None:
        raise DatasetError(where, "MP4 video frames need PyAV (pip install av), which is not installed")
    if not path.is_file():
        raise DatasetError(where, f"video file not found: {path.name}")
    if not timestamps:
        return
    # Half a frame period, a little less: the nearest frame wins, a missing frame is never papered over.
    tol = 0.4 / fps if fps > 0 else 1e-3
    try:
        # Forcing the MP4 demuxer stops FFmpeg probing the content: an "mp4" that is really an HLS or
        # concat playlist could otherwise make it open other files or URLs.
        with av.open(str(path), format="mp4") as container:
            if not container.streams.video:
                raise DatasetError(where, f"{path.name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            _seek(container, stream, timestamps[0])
            yield from _match(container.decode(stream), stream, timestamps, tol, where)
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated video {path.name} ({reason(exc, path)})") from None


def _seek(container, stream, first_ts: float) -> None:
    if first_ts > 0 and stream.time_base:
        # Seeks to the keyframe at or before the target; decoding then walks forward to it.
        container.seek(int(first_ts / stream.time_base), stream=stream, backward=True, any_frame=False)


def _match(frames, stream, timestamps: Sequence[float], tol: float, where: str) -> Iterator[np.ndarray]:
    i = 0
    for frame in frames:
        if frame.pts is None:
            continue
        t = float(frame.pts * stream.time_base)
        while i < len(timestamps) and abs(t - timestamps[i]) <= tol:
            yield frame.to_ndarray(format="rgb24")
            i += 1
        if i == len(timestamps):
            return
        if t > timestamps[i] + tol:
            raise DatasetError(where, f"no video frame at timestamp {timestamps[i]:.4f}s (next frame at {t:.4f}s)")
    raise DatasetError(where, f"video ends before timestamp {timestamps[i]:.4f}s (truncated or too short)")


def video_duration(path: Path, where: str) -> float | None:
    """Seconds covered by the first video stream, from the container header (no decoding); None if unknown."""
    if av is None:
        raise DatasetError(where, "MP4 video frames need PyAV (pip install av), which is not installed")
    try:
        with av.open(str(path), format="mp4") as container:
            if not container.streams.video:
                raise DatasetError(where, f"{path.name} has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
            return None if container.duration is None else container.duration / 1e6
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated video {path.name} ({reason(exc, path)})") from None
