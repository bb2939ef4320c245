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


# Celery's task messages (celeryconfig: task_serializer) in the same strict JSON, written by orjson: kombu's json
# encoder took 0.245 ms for the safety hand-off's body (a 50-step chunk) and its decoder, with a Python hook on
# every dict, 0.124 ms; orjson takes 0.01 ms each (issue 26). Its own content type, so a message is read by
# the decoder that wrote it: kombu's "json" (still accepted: control messages, events, and messages queued by a
# release before this one) tags dates and UUIDs its own way, which task payloads never hold. A type JSON has
# no form for is refused at the publish (TypeError), as kombu's json refuses what it does not know. A model
# output's NaN travels as null, which the safety stage reads back as NaN (np.asarray(..., float64)) and
# rejects as not finite, as it did before; the stored report holds null for it either way (safety.result).
MESSAGE_SERIALIZER = "vla-json"
MESSAGE_CONTENT_TYPE = "application/x-vla-json"


def message_dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def register_message_serializer() -> None:
    from kombu.serialization import register

    register(MESSAGE_SERIALIZER, message_dumps, loads, content_type=MESSAGE_CONTENT_TYPE, content_encoding="utf-8")
