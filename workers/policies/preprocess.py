"""Image preprocessing shared by the backends, each as its reference does it (OpenVLA: PIL bicubic;
pi0: openpi's PIL bilinear resize-with-pad, centred, LeRobot >= 0.4's torch port of it, or LeRobot <= 0.3's
torch bilinear padded top-left, whichever the checkpoint's layout says)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from workers.policies.errors import PolicyInputError


def resize_naive(img: np.ndarray, size: int) -> np.ndarray:
    """Bicubic straight to size x size, aspect ratio not kept (OpenVLA's resize-naive). PIL antialiases."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.array(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


def check_fits(field: str, img: np.ndarray, size: int) -> None:
    """An image so elongated that resize-with-pad to size x size would shrink its short side to nothing is a
    bad input (PolicyInputError naming the field), not a failure of the whole batch it would run in."""
    h, w = img.shape[:2]
    ratio = max(w / size, h / size)
    if int(h / ratio) < 1 or int(w / ratio) < 1:
        raise PolicyInputError(field, f"image of {h}x{w} is too elongated: its short side would be 0 pixels "
                                      f"once fitted into {size}x{size}")


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """openpi_client.image_tools.resize_with_pad: PIL bilinear to fit inside size x size keeping the aspect
    ratio (sides truncated, not rounded: int(side / ratio)), pasted at the truncated half-offsets on black."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img
    ratio = max(w / size, h / size)
    nh, nw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = max(0, int((size - nh) / 2)), max(0, int((size - nw) / 2))
    out[top : top + nh, left : left + nw] = resized
    return out


def resize_with_pad_top_left(img: np.ndarray, size: int) -> torch.Tensor:
    """LeRobot <= 0.3's pi0 (modeling_pi0.resize_with_pad, then `img * 2 - 1`): the image as float in [0, 1],
    torch bilinear (align_corners=False, no antialias) to fit inside size x size keeping the aspect ratio
    (sides truncated), zero-padded on the left and top (the picture sits bottom-right), then [-1, 1].
    Returns float32 CHW, ready for the tower (the padding is -1, black)."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255.0)
    h, w = img.shape[:2]
    ratio = max(w / size, h / size)
    nh, nw = int(h / ratio), int(w / ratio)
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    x = torch.nn.functional.pad(x, (max(0, size - nw), 0, max(0, size - nh), 0), value=0.0)
    return x[0] * 2.0 - 1.0


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 HWC -> float32 CHW, scaled to [0, 1] then (x - mean) / std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


def normalize_batch(images: Sequence[np.ndarray], norms: Sequence[tuple[Sequence[float], Sequence[float]]],
                    device: torch.device | None = None) -> torch.Tensor:
    """Same-size uint8 HWC images -> float32 (B, 3 * len(norms), H, W): each image normalised once per
    (mean, std) pair, the pairs stacked along the channels.

    Element for element the arithmetic of `normalize` ((x / 255 - mean) / std, in that order, in fp32), so
    the result is bitwise the same, but done once per batch rather than per image and tower: one upload of
    uint8 (a quarter of float32's bytes) and three whole-batch operations, on `device` when one is given."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
    if device is not None:
        x = x.to(device, non_blocking=True)
    # Channels first while still uint8 (a quarter of float32's bytes to move), so the float work runs on a
    # contiguous tensor; repeated only when there is more than one (mean, std) pair.
    x = x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    if len(norms) > 1:
        x = x.repeat(1, len(norms), 1, 1)
    m = torch.tensor([c for mean, _ in norms for c in mean], dtype=torch.float32, device=x.device)
    s = torch.tensor([c for _, std in norms for c in std], dtype=torch.float32, device=x.device)
    return x.sub_(m[:, None, None]).div_(s[:, None, None])


def resize_with_pad_centred_torch(img: np.ndarray, size: int) -> torch.Tensor:
    """LeRobot >= 0.4's `resize_with_pad_torch` (openpi's torch port) as its pi0 and pi0.5 policies apply it:
    the image as float in [0, 1], torch bilinear (align_corners=False, no antialias) to fit inside size x size
    (sides truncated), clamped to [0, 1], zero-padded centred (the odd pixel at the bottom/right), then `* 2 - 1`.
    Returns float32 CHW, ready for the tower."""
    x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)[None].div(255.0)
    h, w = img.shape[:2]
    ratio = max(w / size, h / size)
    nh, nw = int(h / ratio), int(w / ratio)
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, left = (size - nh) // 2, (size - nw) // 2
    x = torch.nn.functional.pad(x, (left, size - nw - left, top, size - nh - top), value=0.0)
    return x[0] * 2.0 - 1.0


# openpi's normalisation to [-1, 1]: (x / 255 - 0.5) / 0.5 per channel.
OPENPI_NORM = ((0.5,) * 3, (0.5,) * 3)

# How each checkpoint convention brings a camera image to the tower's square, in [-1, 1] (float32 CHW).
IMAGE_CONVENTIONS = {
    "openpi": lambda img, size: normalize(resize_with_pad(img, size), *OPENPI_NORM),
    "lerobot-0.3": resize_with_pad_top_left,
    "lerobot-torch": resize_with_pad_centred_torch,
}


def to_tower(img: np.ndarray, size: int, convention: str) -> torch.Tensor:
    return IMAGE_CONVENTIONS[convention](img, size)


def to_towers(images: Sequence[np.ndarray], size: int, convention: str) -> torch.Tensor:
    """A pass's camera images brought to the tower as `to_tower` brings each, as one float32 (N, 3, size, size).

    openpi's convention resizes each image (uint8, a no-op at the tower's size) and normalises the stack at once
    (normalize_batch: the same arithmetic, bitwise): image by image, the permuted float copies and the stack cost
    2.4 ms per row of a batch of eight on the development VM (issue 26). The torch conventions go image by image."""
    if not images:
        return torch.zeros(0, 3, size, size)
    if convention == "openpi":
        return normalize_batch([resize_with_pad(img, size) for img in images], [OPENPI_NORM])
    return torch.stack([to_tower(img, size, convention) for img in images])
