"""Fixed inputs for the golden runs: synthetic images (smooth, with edges, so every resize kernel
matters and the arrays compress), instructions, states, and digests of the tiny weights."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors import safe_open

OPENVLA_ITEMS = (  # (image index, instruction, unnorm_key)
    (0, "pick up the red block", "bridge_orig"),
    (1, "put the carrot on the plate", "bridge_orig"),
    (2, "Open The Drawer", "fractal20220817_data"),
    (0, "move the blue cup to the left of the sink slowly", "fractal20220817_data"),
)
OPENVLA_IMAGE_SHAPES = ((256, 256), (120, 160), (224, 224))  # Bridge's 256 px; an upscale; the identity
OPENPI_IMAGE_SHAPES = ((480, 640), (224, 224), (200, 300), (300, 200), (60, 80))


def synthetic_image(seed: int, h: int, w: int, noise: float = 6.0) -> np.ndarray:
    """Gradients, a few solid rectangles and light noise: uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * xx / max(1, w - 1), 255 * yy / max(1, h - 1), 127 + 100 * np.sin((xx + yy) / 9.0)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0 : y0 + rng.integers(4, h // 2 + 5), x0 : x0 + rng.integers(4, w // 2 + 5)] = rng.integers(0, 256, 3)
    img += rng.normal(0, noise, img.shape) if noise else 0.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_digest(img: np.ndarray) -> str:
    return hashlib.sha256(f"{img.dtype}|{img.shape}|".encode() + np.ascontiguousarray(img).tobytes()).hexdigest()


def regenerate_images(specs: np.ndarray, digests: np.ndarray) -> list[np.ndarray]:
    """The fixtures store (seed, h, w, noise) and a digest per input image instead of its pixels (which
    compress badly); this rebuilds them and fails loudly if this numpy draws different ones."""
    images = []
    for (seed, h, w, noise), want in zip(specs, digests, strict=True):
        img = synthetic_image(int(seed), int(h), int(w), float(noise))
        if image_digest(img) != str(want):
            raise AssertionError(f"synthetic image seed={seed} {h}x{w} differs from the one the fixture was "
                                 "built from (numpy's generator changed?); regenerate the fixtures")
        images.append(img)
    return images


def image_arrays(prefix: str, specs: list[tuple[int, int, int, float]]) -> tuple[dict[str, np.ndarray], list]:
    """({prefix_specs, prefix_digests}, images) for a list of (seed, h, w, noise)."""
    images = [synthetic_image(*spec) for spec in specs]
    return {f"{prefix}_specs": np.array(specs, dtype=np.float64),
            f"{prefix}_digests": np.array([image_digest(i) for i in images])}, images


def weights_digest(ckpt_dir: Path) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order: independent of sharding."""
    h = hashlib.sha256()
    tensors = {}
    for f in sorted(Path(ckpt_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensors[name] = (f, name)
    for name in sorted(tensors):
        f, _ = tensors[name]
        with safe_open(str(f), framework="numpy") as st:
            arr = st.get_tensor(name)
        h.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def openvla_inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(what the fixture stores, what the runner gets: the same plus the images themselves)."""
    arrays, images = image_arrays("input", [(100 + i, h, w, 2.0) for i, (h, w) in enumerate(OPENVLA_IMAGE_SHAPES)])
    arrays["image_index"] = np.array([i for i, _, _ in OPENVLA_ITEMS])
    arrays["instructions"] = np.array([s for _, s, _ in OPENVLA_ITEMS])
    arrays["unnorm_keys"] = np.array([k for _, _, k in OPENVLA_ITEMS])
    return arrays, {**arrays, **{f"image_{i}": img for i, img in enumerate(images)}}
