"""msgpack-numpy as openpi_client.msgpack_numpy writes it, decoded without trusting the dtype, under the model's
frame budget (web.compat.openpi.limits), and every string checked by the input guard's rules. REST's msgpack
bodies (web/msgpack_body.py) use the same decoder under their own budget."""
from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import numpy as np

from web.compat.arrays import ArrayError, make_array
from web.compat.openpi.limits import FrameBudget, Limits, budget_for
from web.input_guard import check_value


def _pack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _generic(dtype: Any, data: Any) -> np.generic:
    """A numpy scalar from openpi's {__npgeneric__, data, dtype}: a plain number that fits the dtype, or 422."""
    kind = make_array(b"", dtype, [0]).dtype  # checks the dtype
    ok, what = {"b": (bool, "boolean"), "u": (int, "integer"), "i": (int, "integer"),
                "f": (int | float, "number")}[kind.kind]
    if not isinstance(data, ok) or (kind.kind != "b" and isinstance(data, bool)):
        raise ArrayError(f"__npgeneric__ data must be a {what} for dtype {kind.str}")
    try:
        value = kind.type(data)
    except (OverflowError, ValueError, TypeError):
        raise ArrayError(f"__npgeneric__ value out of range for dtype {kind.str}") from None
    if kind.kind == "f" and math.isfinite(data) and not np.isfinite(value):
        raise ArrayError(f"__npgeneric__ value out of range for dtype {kind.str}")
    return value


class MessageError(ArrayError):
    """The bytes are not one msgpack message within the budget (as opposed to a message with a bad array in it).
    `limit` names the budget's limit it went past (frame, bin, str, array, map, ext, containers, values), if any."""

    def __init__(self, detail: str, *, limit: str | None = None):
        super().__init__(detail)
        self.limit = limit


_OVER_LIMIT = re.compile(r"exceeds max_(bin|str|array|map|ext)_len")  # how msgpack words a length over its limit


def _hook(obj: dict[Any, Any]) -> Any:
    if "__ndarray__" in obj or "__npgeneric__" in obj:
        # The same maps with str keys: what a msgpack library in another language writes most easily.
        obj = {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}
    if b"__ndarray__" in obj:
        data = obj.get(b"data") or b""
        if not isinstance(data, bytes):
            raise ArrayError("an array's data must be bytes (msgpack bin)")
        return make_array(data, obj.get(b"dtype"), obj.get(b"shape"))
    if b"__npgeneric__" in obj:
        return _generic(obj.get(b"dtype"), obj.get(b"data"))
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack)


DEFAULT_BUDGET = budget_for(None, Limits())  # a model no worker has described yet


def unpackb(raw: bytes, budget: FrameBudget = DEFAULT_BUDGET) -> Any:
    """Raises ArrayError (a ValueError) for anything that is not a msgpack-numpy message within `budget`.

    The limits make msgpack refuse an over-long object from its length prefix; the container count stops a
    frame of nested empty maps (1 byte each) after `budget.containers` of them, however large the frame, and
    the value count (`budget.values`, when set) a frame of many small arrays."""
    if len(raw) > budget.frame_bytes:  # what Unpacker's max_buffer_size checks, without copying the frame
        raise MessageError(f"frame of {len(raw)} bytes; at most {budget.frame_bytes} for this model", limit="frame")
    seen = values = 0

    def count(obj: Any) -> Any:
        nonlocal seen, values
        seen += 1
        values += len(obj)
        if seen > budget.containers:
            raise MessageError(f"more than {budget.containers} maps and arrays in one observation", limit="containers")
        if budget.values is not None and values > budget.values:
            raise MessageError(f"more than {budget.values} values in one message", limit="values")
        return _hook(obj) if isinstance(obj, dict) else obj

    try:
        return msgpack.unpackb(raw, raw=False, object_hook=count, list_hook=count, strict_map_key=False,
                               max_bin_len=budget.bin_bytes, max_str_len=budget.str_len,
                               max_array_len=budget.array_len, max_map_len=budget.map_len, max_ext_len=0)
    except ArrayError:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        over = _OVER_LIMIT.search(str(exc))
        raise MessageError(f"not a msgpack-numpy message within this model's limits: {type(exc).__name__}",
                           limit=over.group(1) if over else None) from None


def check_observation(obs: Any) -> None:
    """The input guard's rules (web/input_guard.py) over a decoded observation: every key and string free of
    control characters, numbers in range; a 422 naming the field. Arrays are numeric (checked at decode)."""
    stack: list[tuple[Any, str]] = [(obs, "")]
    while stack:  # the container count bounds this walk
        item, path = stack.pop()
        if isinstance(item, dict | list):
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                field = f"{path}.{name}" if path else name
                check_value(name, field)
                stack.append((child, field))
        elif isinstance(item, np.generic):
            check_value(item.item(), path)
        elif isinstance(item, str | int | float):
            check_value(item, path)
