"""Small validators shared by profile loading and robot_config overrides.

Each raises SafetyConfigError naming the exact field, so a 422 can point at the offending key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from safety.errors import SafetyConfigError


def number(value: Any, field: str, *, positive: bool = False) -> float:
    # bool is an int subclass; "true" as a speed limit is a client bug, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SafetyConfigError(field, f"must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise SafetyConfigError(field, "must be finite")
    if positive and out <= 0.0:
        raise SafetyConfigError(field, f"must be > 0, got {out}")
    return out


def vector(value: Any, field: str, length: int) -> np.ndarray:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SafetyConfigError(field, f"must be a list of {length} numbers")
    items = list(value)
    if len(items) != length:
        raise SafetyConfigError(field, f"must have {length} elements, got {len(items)}")
    return np.array([number(v, f"{field}[{i}]") for i, v in enumerate(items)], dtype=np.float64)


def box(value: Any, field: str, *, lo_key: str = "min", hi_key: str = "max",
        length: int = 3) -> tuple[np.ndarray, np.ndarray]:
    mapping = mapping_of(value, field)
    for key in (lo_key, hi_key):
        if key not in mapping:
            raise SafetyConfigError(f"{field}.{key}", "is required")
    lo = vector(mapping[lo_key], f"{field}.{lo_key}", length)
    hi = vector(mapping[hi_key], f"{field}.{hi_key}", length)
    bad = np.flatnonzero(lo >= hi)
    if bad.size:
        i = int(bad[0])
        raise SafetyConfigError(f"{field}.{lo_key}", f"{lo_key}[{i}]={lo[i]} must be < {hi_key}[{i}]={hi[i]}")
    return lo, hi


def mapping_of(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SafetyConfigError(field, f"must be an object, got {type(value).__name__}")
    return value


def only_keys(mapping: Mapping[str, Any], allowed: Iterable[str], field: str) -> None:
    """Unknown keys are errors: a misspelt 'workspace_bound' silently ignored would drop a limit."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            prefix = f"{field}." if field else ""
            raise SafetyConfigError(f"{prefix}{key}", "unknown field" + suggest(str(key), allowed))


def suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
