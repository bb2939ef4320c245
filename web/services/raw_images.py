"""A camera image given as an array (the compatibility doors, REST's raw-array bodies): its bytes are stored
as they came, beside the job's message (workers/wire/frames.py), and never encoded by the service.

The web checks only what it can see without touching pixels, plus one pass over non-uint8 values (which must
lie in 0..255): dtype, shape, pixel count, byte count. The GPU worker lays it out as (H, W, 3) uint8.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from web.errors import ApiError
from workers.wire import frames
from workers.wire.images import MAX_PIXELS

# A raw frame is larger than its PNG: allow four times the encoded-image cap (16 MiB by default, a
# 2300x2300 RGB frame), still far below the request cap.
RAW_FACTOR = 4


@dataclass(frozen=True)
class RawImage:
    array: np.ndarray  # C-contiguous; its buffer is what is stored

    @classmethod
    def of(cls, value: Any, field: str, *, channels_first: bool = False) -> RawImage:
        """An array (or nested list) of integer pixels as a RawImage; a 4xx problem if it cannot be an image."""
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value) if isinstance(value, list) else None
        except ValueError:  # a ragged nested list
            arr = None
        if arr is None or arr.size == 0 or arr.dtype.kind not in "ui":
            raise ApiError(422, "invalid_image", "image must be a non-empty uint8 array (H, W, 3)", field=field)
        if channels_first and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
        why = frames.check_raw(arr.dtype, arr.shape, MAX_PIXELS)
        if why is not None:
            raise ApiError(413 if "pixels" in why else 422, "image_too_large" if "pixels" in why else "invalid_image",
                           why, field=field)
        if arr.dtype != np.uint8 and (arr.min() < 0 or arr.max() > 255):
            raise ApiError(422, "invalid_image", "image values must lie in 0..255", field=field)
        arr = np.ascontiguousarray(arr)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return cls(arr)

    def checked(self, max_image_bytes: int, field: str) -> tuple[dict[str, Any], bytes]:
        """Its description (message and job row) and bytes, as submit._check_image answers for encoded ones."""
        data = self.array.tobytes()
        if len(data) > max_image_bytes * RAW_FACTOR:
            raise ApiError(413, "image_too_large", f"raw image is larger than {max_image_bytes * RAW_FACTOR} bytes",
                           field=field)
        h, w = frames.height_width(self.array.shape)
        return frames.describe(data, format=frames.RAW, dtype=self.array.dtype.str, shape=list(self.array.shape),
                               height=int(h), width=int(w)), data
