"""Ground truth for the dataset writers: synthetic episodes, and image/video encoders.

Frames are solid colours that change per step and episode: they survive lossy video codecs closely
enough to check, and PNG exactly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

TASKS = ("pick up the red block", "open the drawer", "push the button")
FPS = 10


@dataclass
class Recorded:
    actions: dict[int, np.ndarray] = field(default_factory=dict)  # episode -> (T, D) float32
    states: dict[int, np.ndarray] = field(default_factory=dict)  # episode -> (T, S) float32
    images: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # episode -> camera -> (T,H,W,3)
    instructions: dict[int, list[str]] = field(default_factory=dict)  # episode -> one per step

    @property
    def total_steps(self) -> int:
        return sum(len(a) for a in self.actions.values())


def make_recorded(episodes: int = 2, steps: int = 10, image_hw: tuple[int, int] = (64, 64), action_dim: int = 7,
                  state_dim: int | None = 8, cameras: tuple[str, ...] = ("image",), seed: int = 0,
                  switch_task: bool = False) -> Recorded:
    rng = np.random.default_rng(seed)
    rec = Recorded()
    h, w = image_hw
    for e in range(episodes):
        acts = rng.normal(0, 0.5, (steps, action_dim)).astype(np.float32)
        if action_dim > 6:
            acts[:, 6] = rng.integers(0, 2, steps)  # binary gripper, as recorded by most teleop rigs
        rec.actions[e] = acts
        if state_dim:
            rec.states[e] = rng.normal(0, 1, (steps, state_dim)).astype(np.float32)
        rec.images[e] = {}
        for c, cam in enumerate(cameras):
            frames = np.zeros((steps, h, w, 3), np.uint8)
            frames[..., 0] = (np.arange(steps) * 12 % 256)[:, None, None]
            frames[..., 1] = (40 + 60 * e) % 256
            frames[..., 2] = (200 - 50 * c) % 256
            rec.images[e][cam] = frames
        texts = [TASKS[e % 2]] * steps
        if switch_task:
            texts[steps // 2:] = [TASKS[2]] * (steps - steps // 2)
        rec.instructions[e] = texts
    return rec


def encode_image(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=95) if fmt == "JPEG" else Image.fromarray(img).save(
        buf, format=fmt)
    return buf.getvalue()


def encode_mp4(path: Path, frames: np.ndarray, fps: int = FPS, codec: str = "libx264") -> None:
    """Encode (T, H, W, 3) frames with PyAV; LeRobot's own default codec is AV1 (libsvtav1)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "libsvtav1":
            stream.options = {"crf": "20", "preset": "12"}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
