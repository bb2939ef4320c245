"""Numpy arrays from and to the wire formats of the compatibility adapters, decoded defensively.

json-numpy encodes an array as {"__numpy__": base64, "dtype": descr, "shape": [...]}; openpi's msgpack-numpy as
{b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": [...]}. Both packages would hand any dtype
string to numpy; here only plain numeric dtypes are accepted and the byte count must match the shape, so a
hostile body is a 422, never an object array or an exception deep inside numpy.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
from typing import Any

import numpy as np

from web.errors import ApiError
from web.services.deferred import PendingImage
from web.services.raw_images import RawImage
from workers.wire.images import MAX_PIXELS

_KINDS = {"u", "i", "f", "b"}
MAX_DIMS = 4


class ArrayError(ValueError):
    pass


def make_array(raw: bytes, dtype: Any, shape: Any) -> np.ndarray:
    try:
        dt = np.dtype(dtype if isinstance(dtype, str) else str(dtype))
    except (TypeError, ValueError):
        raise ArrayError(f"unsupported dtype {dtype!r}") from None
    if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise ArrayError(f"unsupported dtype {dt.str}: only numeric arrays")
    if not isinstance(shape, list | tuple) or len(shape) > MAX_DIMS or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ArrayError(f"bad shape {shape!r}")
    if math.prod(shape) * dt.itemsize != len(raw):
        raise ArrayError(f"{len(raw)} bytes do not fill shape {list(shape)} of {dt.str}")
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def json_numpy_hook(obj: dict[str, Any]) -> Any:
    """`json.loads(object_hook=...)` for json-numpy bodies: an array is exactly {__numpy__, dtype, shape}."""
    if "__numpy__" not in obj:
        return obj
    if set(obj) != {"__numpy__", "dtype", "shape"} or not isinstance(obj["dtype"], str):
        raise ArrayError("an array is {'__numpy__': base64, 'dtype': str, 'shape': [int, ...]} and nothing else")
    try:
        raw = base64.b64decode(obj["__numpy__"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ArrayError("__numpy__ is not valid base64") from None
    arr = make_array(raw, obj.get("dtype"), obj.get("shape"))
    return arr if arr.ndim else arr[()]


def json_numpy_encode(arr: np.ndarray) -> dict[str, Any]:
    """The json-numpy form of an array (what `json_numpy.dumps` writes)."""
    arr = np.ascontiguousarray(arr)
    return {"__numpy__": base64.b64encode(arr.tobytes()).decode(), "dtype": arr.dtype.str, "shape": list(arr.shape)}


def pending_image(value: Any, field: str, *, channels_first: bool = False) -> PendingImage:
    """An RGB image array (H, W, 3), (H, W) or, for openpi's ALOHA layout, (3, H, W), checked now for what is
    cheap (dtype, shape, pixel count) and converted to the REST body's form only once the request has been
    charged (web/services/deferred.py)."""
    arr = _image_array(value, field, channels_first)
    return PendingImage(lambda: _to_raw(arr, field), field, lambda: _digest(arr))


def _digest(arr: np.ndarray) -> str:
    head = f"{arr.dtype.str}{list(arr.shape)}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(arr).tobytes()).hexdigest()


def _image_array(value: Any, field: str, channels_first: bool) -> np.ndarray:
    try:
        arr = np.asarray(value) if isinstance(value, np.ndarray | list) else None
    except ValueError:  # a ragged nested list
        arr = None
    if arr is None or arr.dtype.kind not in "ui" or arr.size == 0:
        raise ApiError(422, "invalid_image", "image must be a non-empty uint8 array (H, W, 3)", field=field)
    if channels_first or (arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3):
        arr = np.moveaxis(arr, 0, -1) if arr.ndim == 3 else arr
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ApiError(422, "invalid_image", f"image has shape {list(arr.shape)}; expected (H, W, 3)", field=field)
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:  # refuse before spending time encoding it
        raise ApiError(413, "image_too_large", f"image is {arr.shape[1]}x{arr.shape[0]}; at most {MAX_PIXELS} pixels",
                       field=field)
    return arr


def _to_raw(arr: np.ndarray, field: str) -> RawImage:
    """The conversion itself, the one place that decides what crosses Redis: the array's own bytes, stored
    beside the job's message and laid out as (H, W, 3) uint8 by the GPU worker (workers/wire/frames.py). No
    image is encoded by the service: the policy sees exactly the pixels the client sent."""
    return RawImage.of(arr, field)
