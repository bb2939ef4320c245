"""msgpack-numpy as openpi_client.msgpack_numpy writes it, decoded without trusting the dtype."""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from web.compat.arrays import ArrayError, make_array


def _pack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _hook(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" in obj:
        return make_array(obj.get(b"data") or b"", obj.get(b"dtype"), obj.get(b"shape"))
    if b"__npgeneric__" in obj:
        arr = make_array(b"", obj.get(b"dtype"), [0])  # checks the dtype
        return arr.dtype.type(obj.get(b"data"))
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack)


def unpackb(raw: bytes) -> Any:
    """Raises ArrayError (a ValueError) for anything that is not a msgpack-numpy message."""
    try:
        return msgpack.unpackb(raw, object_hook=_hook, strict_map_key=False)
    except ArrayError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ArrayError(f"not a msgpack-numpy message: {type(exc).__name__}") from None
