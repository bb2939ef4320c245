"""Small builders shared by the web and integration tests."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_b64(h: int = 64, w: int = 64, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request_body(model: str = "openvla-tiny", **overrides) -> dict:
    body = {
        "model": model,
        "image": png_b64(),
        "instruction": "pick up the red block",
        "robot_config": {"type": "widowx_250"},
        "robot_state": {"ee_position": [0.25, 0.0, 0.1]},
        "safety": {"mode": "clamp"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
