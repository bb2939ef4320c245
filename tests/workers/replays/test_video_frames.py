"""Every decoded video frame is held to the pixel cap, in the probe and in the worker (issue 21 item 6).

The videos are real MP4 files written with PyAV: MJPEG carries each frame's size in the frame itself, so a
stream that starts at 96x96 and turns into 4608x4608 frames mid-way is a file any FFmpeg decodes as such."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.workers.replays.lerobot_writers import CAMERA, V21_VIDEO, write_lerobot_v21
from tests.workers.replays.recorded import FPS
from workers.replays.errors import DatasetError
from workers.replays.formats import open_dataset
from workers.replays.formats.images import MAX_PIXELS
from workers.replays.formats.video import decode_frames
from workers.replays.probe import check
from workers.wire.images import MAX_PIXELS as WIRE_MAX_PIXELS

BIG = 4608  # 21.2 Mpx: over the 16.8 Mpx cap


def write_growing_mp4(path: Path, small: int, big: int, n: int, grow_at: int) -> None:
    """n MJPEG frames at FPS; from frame grow_at on they are big x big (a second encoder, same stream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=FPS)
        stream.width = stream.height = small
        stream.pix_fmt = "yuvj420p"
        large = av.CodecContext.create("mjpeg", "w")
        large.width = large.height = big
        large.pix_fmt, large.time_base = "yuvj420p", Fraction(1, FPS)
        for i in range(n):
            size = big if i >= grow_at else small
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 40 + i, np.uint8), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = i
            for packet in (large if i >= grow_at else stream).encode(frame):
                packet.stream, packet.time_base = stream, Fraction(1, FPS)
                packet.pts = packet.dts = i
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def growing(tmp_path_factory) -> Path:
    """A LeRobot v2.1 dataset of one 6-step episode whose camera video grows to 4608x4608 at step 4."""
    root = tmp_path_factory.mktemp("grow") / "ds"
    write_lerobot_v21(root, episodes=1, steps=6, video=True)
    video = root / V21_VIDEO.format(episode_chunk=0, video_key=CAMERA, episode_index=0)
    write_growing_mp4(video, 64, BIG, n=6, grow_at=4)
    return root


def test_the_caps_agree():
    assert MAX_PIXELS == WIRE_MAX_PIXELS and BIG * BIG > MAX_PIXELS


def test_the_worker_refuses_the_frame_that_grows_naming_its_step(growing):
    with open_dataset(growing) as ds:
        steps = ds.iter_steps(None, None)
        for _ in range(4):  # the first four frames are fine and are delivered
            assert next(steps).images[CAMERA].shape == (64, 64, 3)
        with pytest.raises(DatasetError, match=r"episode 0 step 4: video frame .* 4608x4608; at most"):
            next(steps)


def test_the_probe_refuses_it_too(growing):
    """The header says 64x64 and so does the first step; the probe's key-frame scan finds the big frame."""
    step4 = r"the frame at 0\.4000s \(step 4 of the file at 10 fps\) is 4608x4608; at most"
    with pytest.raises(DatasetError, match=step4):
        check(_req(growing))


def test_the_probe_scan_is_bounded(growing, monkeypatch):
    """Past its key-frame budget the probe lets the file through: the worker refuses it at the step."""
    from workers.replays import probe

    monkeypatch.setattr(probe, "PROBE_KEYFRAMES", 3)
    assert check(_req(growing))["ok"]


def test_a_stream_declaring_big_frames_is_refused_from_its_header(tmp_path):
    root = tmp_path / "ds"
    write_lerobot_v21(root, episodes=1, steps=2, video=True)
    video = root / V21_VIDEO.format(episode_chunk=0, video_key=CAMERA, episode_index=0)
    write_growing_mp4(video, BIG, BIG, n=2, grow_at=0)
    with pytest.raises(DatasetError, match="declares 4608x4608 frames"):
        check(_req(root))


def test_frames_decoded_are_capped_by_the_frames_wanted(tmp_path):
    """A stream packing far more frames than its declared rate: decoding stops at the budget."""
    path = tmp_path / "dense.mp4"
    write_growing_mp4(path, 16, 16, n=60, grow_at=60)  # 60 frames at 10 fps
    assert len(list(decode_frames(path, [0.0, 5.9], fps=FPS, where="dense.mp4"))) == 2  # the true rate
    # Said to be 1 fps: two frames wanted, 2 + 10 + 32 = 44 may be decoded, and the second is 59 frames on.
    with pytest.raises(DatasetError, match="44 frames decoded for 2 wanted"):
        list(decode_frames(path, [0.0, 5.9], fps=1.0, where="dense.mp4"))


def _req(path: Path, **kw) -> dict:
    return {"path": str(path), "uploaded": True, "archive": None, "max_extracted_bytes": 1 << 30,
            "episodes": None, "step_range": None, "instruction": None, **kw}
