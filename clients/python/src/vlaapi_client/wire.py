"""A request body on the wire: JSON, or msgpack when the client sends raw arrays (`VLAClient(raw_arrays=True)`)."""
from __future__ import annotations

from typing import Any

import numpy as np

MSGPACK = "application/msgpack"


def body_kwargs(body: dict[str, Any], *, msgpack_body: bool) -> dict[str, Any]:
    """The `requests` arguments that send `body`: json=..., or msgpack bytes with their Content-Type."""
    if not msgpack_body:
        return {"json": body}
    try:
        import msgpack
    except ImportError:  # an optional dependency: pip install "vlaapi-client[msgpack]"
        raise ImportError("raw_arrays=True sends msgpack bodies: pip install 'vlaapi-client[msgpack]' (or msgpack)"
                          ) from None
    return {"data": msgpack.packb(body, use_bin_type=True, default=_numpy), "headers": {"Content-Type": MSGPACK}}


def _numpy(value: Any) -> Any:
    """A numpy value in a msgpack body: an array as msgpack-numpy, as openpi packs it (an image is stored as it
    came; a state or rtc's prev_actions is read as the list JSON would carry), a scalar as its number."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send {type(value).__name__} in a msgpack body")
