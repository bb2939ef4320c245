"""The edge's input guard: what no schema field may carry, checked once for every request.

PostgreSQL refuses NUL in text and JSONB, the JSON decoder and anything that walks a parsed body recurse
per nesting level, and an integer past 2**53 is neither a JSON number other clients can read nor a value
any column of ours holds. So before any view runs, the query string and (once the key is checked) the JSON
body are walked once, iteratively and within bounds (MAX_ELEMENTS values, MAX_DEPTH levels, MAX_TEXT_CHARS of
text), and a string with a control character, nesting too deep, an integer outside the safe range or a
non-finite number is a 4xx problem document naming the field. The body is parsed here once; the views'
argument parser reads the same parsed value (GuardedParser), so there is one parse per request. The OpenVLA
door parses json-numpy itself, and REST's msgpack bodies are decoded in their view (web/msgpack_body.py, once
the caller's limits allow it); both hand the result to check_value: one set of rules for every door.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from flask import g, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from web.errors import ApiError

MAX_DEPTH = 32  # deeper than any request of ours needs (robot_config is 3 levels), far below the stack limit
MAX_SAFE_INT = 2**53 - 1  # JSON's interoperable integer range (RFC 8259 §6)
# Far above any body of ours (a robot_config, a state vector, a replay's episode list), far below what would
# make the walk (or json.loads before it) cost more than a few milliseconds.
MAX_ELEMENTS = 20_000
MAX_TEXT_CHARS = 64 * 1024 * 1024  # the largest body any route reads (web/body_limits.py); JSON text is no longer
# C0 controls and DEL, except tab, line feed and carriage return, which free text may carry.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NO_BODY = object()


def _refuse(code: str, detail: str, field: str, status: int = 422) -> ApiError:
    # A field path echoes keys the client chose: bounded, and with its control characters made visible.
    return ApiError(status, code, detail, field=_CONTROL.sub("\ufffd", field[:200]))


def check_text(value: str, field: str) -> None:
    """422 if `value` holds a control character other than tab, LF or CR."""
    hit = _CONTROL.search(value)
    if hit is not None:
        raise _refuse("invalid_characters", f"control character U+{ord(hit.group()):04X} is not allowed here",
                      field)


def _path(root: str, keys: list[Any]) -> str:
    """The dotted path of a field, built only when a refusal names it."""
    return ".".join([root, *map(str, keys)] if root else map(str, keys)) or "body"


def _check_scalar(item: Any, root: str, keys: list[Any]) -> int:
    """Check one leaf; returns the characters it counts against MAX_TEXT_CHARS."""
    if isinstance(item, str):
        if _CONTROL.search(item) is not None:
            check_text(item, _path(root, keys))
        return len(item)
    if isinstance(item, bool) or item is None:
        return 0
    if isinstance(item, int):
        if abs(item) > MAX_SAFE_INT:
            raise _refuse("number_out_of_range", f"integers must lie within ±{MAX_SAFE_INT}", _path(root, keys))
    elif isinstance(item, float) and not math.isfinite(item):
        raise _refuse("number_out_of_range", "numbers must be finite", _path(root, keys))
    return 0


def check_value(value: Any, root: str = "") -> None:
    """Walk a parsed JSON value without recursion: strings, keys, depth and numbers (see the module doc).
    Bounded: at most MAX_ELEMENTS values and MAX_TEXT_CHARS of text, and it holds one iterator per nesting
    level, not a tuple or a path per element; a path string is made only for the field a refusal names."""
    keys: list[Any] = []  # the path to the container being walked
    iters: list[Iterator[tuple[Any, Any]]] = []
    elements, chars, item = 0, 0, value
    while True:
        if isinstance(item, dict | list):
            if len(iters) >= MAX_DEPTH:
                raise _refuse("nesting_too_deep", f"JSON nested deeper than {MAX_DEPTH} levels", _path(root, keys))
            iters.append(iter(item.items()) if isinstance(item, dict) else enumerate(item))
        else:
            chars += _check_scalar(item, root, keys)
        if chars > MAX_TEXT_CHARS:
            raise _refuse("body_too_large", f"more than {MAX_TEXT_CHARS} characters of text", root or "body", 413)
        step = None
        while iters and (step := next(iters[-1], None)) is None:
            iters.pop()
        if step is None:
            return
        key, item = step
        del keys[len(iters) - 1:]  # keys is now the path of the container; with `key`, that of `item`
        keys.append(key)
        elements += 1
        if elements > MAX_ELEMENTS:
            raise _refuse("too_many_elements", f"more than {MAX_ELEMENTS} values in one body", root or "body")
        if isinstance(key, str):
            chars += len(key)
            if _CONTROL.search(key) is not None:
                check_text(key, _path(root, keys))


def precheck(raw: bytes | str, field: str = "body") -> None:
    """Refuse, before parsing, text that must hold more than MAX_ELEMENTS values: each value after the first
    in a container follows a comma, and each container opens with a bracket. Counting is a fast scan of the
    bytes, while json.loads would allocate an object per value (a 3 MB body of `[{},{},...]` is a million)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > 2 * MAX_ELEMENTS and data.count(b",") + data.count(b"[") + data.count(b"{") > MAX_ELEMENTS:
        raise _refuse("too_many_elements", f"more than {MAX_ELEMENTS} values in one body", field)


def loads(raw: bytes | str, field: str = "body") -> Any:
    """json.loads with every failure a 4xx: syntax (400), too deep to parse or a number too long (422)."""
    precheck(raw, field)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _refuse("invalid_json", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                      field, 400) from None
    except UnicodeDecodeError:
        raise _refuse("invalid_json", "the body is not UTF-8 text", field, 400) from None
    except RecursionError:
        raise _refuse("nesting_too_deep", f"JSON nested deeper than {MAX_DEPTH} levels", field) from None
    except ValueError:  # an integer literal longer than Python's digit limit
        raise _refuse("number_out_of_range", f"integers must lie within ±{MAX_SAFE_INT}", field) from None
    check_value(value, "" if field == "body" else field)
    return value


def json_body() -> Any:
    """The request's JSON body, parsed and checked once (None when there is none)."""
    body = g.get("guarded_json", _NO_BODY)
    if body is _NO_BODY:
        raw = request.get_data(cache=True) if is_json_request(request) else b""
        body = loads(raw) if raw.strip() else None
        g.guarded_json = body
    return body


def check_request(*, parse_body: bool) -> None:
    """The query string, and with `parse_body` (an authenticated REST request) the JSON body; called for every
    request whose route matched. Any other body is parsed, through json_body(), only if its view asks: a
    request nobody has paid for is not parsed (web/app.py)."""
    for key, values in request.args.lists():
        check_text(key, key)
        for value in values:
            check_text(value, key)
    if parse_body:
        json_body()


class GuardedParser(FlaskParser):
    """webargs' Flask parser reading the body json_body() already parsed and checked."""

    def _raw_load_json(self, req) -> Any:
        if not is_json_request(req):
            return core.missing
        body = json_body()
        return core.missing if body is None else body
