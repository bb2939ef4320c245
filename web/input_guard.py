"""The edge's input guard: what no schema field may carry, checked once for every request.

PostgreSQL refuses NUL in text and JSONB, the JSON decoder and anything that walks a parsed body recurse
per nesting level, and an integer past 2**53 is neither a JSON number other clients can read nor a value
any column of ours holds. So before any view runs, the query string and the JSON body are walked once,
iteratively, and a string with a control character, nesting deeper than MAX_DEPTH, an integer outside the
safe range or a non-finite number is a 4xx problem document naming the field. The body is parsed here once;
the views' argument parser reads the same parsed value (GuardedParser), so there is one parse per request.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import g, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from web.errors import ApiError

MAX_DEPTH = 32  # deeper than any request of ours needs (robot_config is 3 levels), far below the stack limit
MAX_SAFE_INT = 2**53 - 1  # JSON's interoperable integer range (RFC 8259 §6)
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


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def check_value(value: Any, root: str = "") -> None:
    """Walk a parsed JSON value without recursion: strings, keys, depth and numbers (see the module doc)."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, path or "body")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INT:
                raise _refuse("number_out_of_range", f"integers must lie within ±{MAX_SAFE_INT}", path or "body")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse("number_out_of_range", "numbers must be finite", path or "body")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _refuse("nesting_too_deep", f"JSON nested deeper than {MAX_DEPTH} levels", path or "body")
            pairs = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, child in reversed(pairs):  # reversed onto the stack: the first bad field is the one named
                if isinstance(key, str):
                    check_text(key, _join(path, key))
                stack.append((child, _join(path, key), depth + 1))


def loads(raw: bytes | str, field: str = "body") -> Any:
    """json.loads with every failure a 4xx: syntax (400), too deep to parse or a number too long (422)."""
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


def check_request() -> None:
    """The query string and the JSON body; called for every request, after authentication."""
    for key, values in request.args.lists():
        check_text(key, key)
        for value in values:
            check_text(value, key)
    json_body()


class GuardedParser(FlaskParser):
    """webargs' Flask parser reading the body json_body() already parsed and checked."""

    def _raw_load_json(self, req) -> Any:
        if not is_json_request(req):
            return core.missing
        body = json_body()
        return core.missing if body is None else body
