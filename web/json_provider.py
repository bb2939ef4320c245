"""Flask's JSON answers through orjson (workers/wire/fastjson.py says why): the same JSON values as Flask's own
provider writes, keys sorted as it sorts them, with every type orjson would format its own way (dates, which
Flask writes as HTTP dates; decimals; dataclasses) handed to Flask's default function as before. Non-ASCII
text is written as UTF-8 rather than as \\u escapes (the same strings to any JSON parser)."""
from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent or other formatting asked for: the stock path
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default,
                                option=_OPTS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)).decode()
        except TypeError:  # what orjson refuses and json accepts (ints over 64 bits, NaN kept as NaN...)
            return super().dumps(obj)
