"""The orjson paths (web/json_provider.py, workers/wire/fastjson.py) write the same JSON values as the stock ones."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import numpy as np
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from web.json_provider import OrjsonProvider
from workers.wire import fastjson

VALUE = {"b": [1, 2.5, None, True, "ü"], "a": {"z": 1, "y": {"k": "v"}}, "when": dt.datetime(2026, 12, 7, 16, 0),
         "day": dt.date(2026, 12, 7), "id": uuid.UUID(int=5), "price": decimal.Decimal("1.10"), "big": 2**70}


def test_flask_provider_matches_the_stock_one() -> None:
    app = Flask(__name__)
    ours, stock = OrjsonProvider(app), DefaultJSONProvider(app)
    assert json.loads(ours.dumps(VALUE)) == json.loads(stock.dumps(VALUE))
    assert list(json.loads(ours.dumps({"b": 1, "a": 2}))) == ["a", "b"]  # keys sorted as Flask sorts them
    assert ours.dumps({"a": 1}, indent=2) == stock.dumps({"a": 1}, indent=2)


def test_fastjson_round_trips_numpy_and_falls_back() -> None:
    value = {"x": np.arange(3, dtype=np.float32), "n": np.int64(4), 1: "int key"}
    assert fastjson.loads(fastjson.dumps(value)) == {"x": [0.0, 1.0, 2.0], "n": 4, "1": "int key"}
    assert fastjson.loads(fastjson.dumps({"big": 2**70})) == {"big": 2**70}  # over 64 bits: the stdlib writes it
