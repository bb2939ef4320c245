"""JSON on the hot path: orjson where it can, the standard library where it cannot.

A pi0 result (a 50-step chunk, its original, the safety report) is about 27 KB of JSON, and one job writes it
to PostgreSQL, into the waiter's wake-up token and back out to the client: with the standard library that is
several milliseconds of CPU per request on a small host (measured in docs/benchmarks.md, issue 26); orjson
does the same in a tenth. Output is strict JSON either way (orjson writes NaN and infinities as null, which
the stored results never hold: safety.result cleans them first).
"""
from __future__ import annotations

import json
from typing import Any

import orjson

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj, option=_OPTS).decode()
    except TypeError:  # a type orjson does not know (JSONEncodeError is a TypeError): the stdlib's message
        return json.dumps(obj)


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)
