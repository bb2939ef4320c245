"""Decode the frames of an MP4 file at given timestamps (LeRobot's video features), with PyAV.

PyAV bundles its own FFmpeg (H.264, HEVC, AV1 through dav1d, MPEG-4), so no system codec is needed.
torchvision's video reader is not a fallback: it was removed from torchvision in favour of torchcodec.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from workers.replays.errors import DatasetError, reason
from workers.replays.formats.images import MAX_PIXELS

# Frames decoded to reach the first wanted one (the walk from the keyframe before it): ten seconds of video
# at the declared rate, plus a margin. A stream that packs more frames than its rate says, or hides a long
# run of frames between two wanted ones, is refused instead of decoded without end.
MAX_WALK_S = 10.0
WALK_MARGIN = 32

try:  # an optional dependency: datasets with images stored in parquet/HDF5/NPZ work without it
    import av
except ImportError:  # pragma: no cover - exercised only where PyAV is missing
    av = None


def video_supported() -> bool:
    return av is not None


def decode_frames(path: Path, timestamps: Sequence[float], fps: float, where: str,
                  first: tuple[int, int] = (0, 0)) -> Iterator[np.ndarray]:
    """Yield one HxWx3 uint8 frame per timestamp (seconds from the file's start, ascending); `first` is the
    (episode, step) of timestamps[0], so that an error names the step.

    Every decoded frame is held to MAX_PIXELS before it is converted (a stream may change size mid-way:
    checking the first frame proves nothing about the rest), and the frames decoded are capped by the count
    wanted (see MAX_WALK_S)."""
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
            check_stream_size(stream, path, where)
            _seek(container, stream, timestamps[0])
            budget = len(timestamps) + int(max(fps, 1.0) * MAX_WALK_S) + WALK_MARGIN
            frames = _capped(container.decode(stream), budget, len(timestamps), path, where)
            yield from _match(frames, stream, timestamps, tol, where, first)
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated video {path.name} ({reason(exc, path)})") from None


def _seek(container, stream, first_ts: float) -> None:
    if first_ts > 0 and stream.time_base:
        # Seeks to the keyframe at or before the target; decoding then walks forward to it.
        container.seek(int(first_ts / stream.time_base), stream=stream, backward=True, any_frame=False)


def check_stream_size(stream, path: Path, where: str) -> None:
    """The size the stream's header declares (no decoding), held to MAX_PIXELS."""
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if width * height > MAX_PIXELS:
        raise DatasetError(where, f"video {path.name} declares {width}x{height} frames; at most {MAX_PIXELS} "
                                  "pixels each")


def _capped(frames, budget: int, wanted: int, path: Path, where: str):
    for n, frame in enumerate(frames, 1):
        if n > budget:
            raise DatasetError(where, f"video {path.name}: {budget} frames decoded for {wanted} wanted; the stream "
                                      "holds more frames than its frame rate says")
        yield frame


def _match(frames, stream, timestamps: Sequence[float], tol: float, where: str,
           first: tuple[int, int]) -> Iterator[np.ndarray]:
    i = 0
    for frame in frames:
        if frame.pts is None:
            continue
        t = float(frame.pts * stream.time_base)
        if frame.width * frame.height > MAX_PIXELS:  # every decoded frame, before to_ndarray makes it RGB
            step = first[1] + min(i, len(timestamps) - 1)
            raise DatasetError(where, f"episode {first[0]} step {step}: video frame at {t:.4f}s is "
                                      f"{frame.width}x{frame.height}; at most {MAX_PIXELS} pixels each (the "
                                      "stream changes size mid-way)")
        while i < len(timestamps) and abs(t - timestamps[i]) <= tol:
            yield frame.to_ndarray(format="rgb24")
            i += 1
        if i == len(timestamps):
            return
        if t > timestamps[i] + tol:
            raise DatasetError(where, f"no video frame at timestamp {timestamps[i]:.4f}s (next frame at {t:.4f}s)")
    raise DatasetError(where, f"video ends before timestamp {timestamps[i]:.4f}s (truncated or too short)")


def check_video_header(path: Path, where: str, keyframes: int = 0, fps: float = 0.0) -> int:
    """The declared frame size of a video file, from its header, then the size of up to `keyframes` of its
    key frames, decoded alone (skip_frame NONKEY: no prediction chain, a fraction of the frames). A codec
    changes size at a key frame (a new sequence header), so this finds a stream that grows mid-way without
    decoding it all; the worker still checks every frame it decodes. Returns the key frames decoded."""
    if av is None or not path.is_file():
        return 0  # the reader says what is missing when it decodes
    decoded = 0
    try:
        with av.open(str(path), format="mp4") as container:
            for stream in container.streams.video:
                check_stream_size(stream, path, where)
            if not container.streams.video or keyframes <= 0:
                return 0
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                decoded += 1
                if frame.width * frame.height > MAX_PIXELS:
                    t = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base else -1
                    step = f" (step {round(t * fps)} of the file at {fps:g} fps)" if fps > 0 and t >= 0 else ""
                    raise DatasetError(where, f"video {path.name}: the frame at {t:.4f}s{step} is {frame.width}x"
                                              f"{frame.height}; at most {MAX_PIXELS} pixels each (the stream "
                                              "changes size mid-way)")
                if decoded >= keyframes:
                    break
        return decoded
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated video {path.name} ({reason(exc, path)})") from None


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
