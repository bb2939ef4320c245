"""Stream a replay's per-step rows as JSON lines, CSV or Parquet, in byte chunks.

The generators suit a Flask streaming response (`Response(stream_rows(rows, "csv"), mimetype=...)`):
JSONL and CSV never hold more than one batch of rows; Parquet needs its footer written last, so it is
built in memory (per row group) and then yielded in chunks.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from workers.replays.rows import FIELDS, as_row

MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
BATCH_ROWS = 1000
CHUNK_BYTES = 1 << 20
PARQUET_SCHEMA = pa.schema([
    ("episode", pa.int64()), ("step", pa.int64()),
    ("predicted_action", pa.list_(pa.float64())), ("raw_action", pa.list_(pa.float64())),
    ("recorded_action", pa.list_(pa.float64())),
    ("safety_decision", pa.string()), ("safety_flags", pa.list_(pa.string())), ("safety_profile", pa.string()),
    ("latency_ms", pa.float64()),
])


def stream_rows(rows: Iterable[Any], fmt: str) -> Iterator[bytes]:
    """Bytes chunks of `rows` in `fmt` ("jsonl", "csv" or "parquet")."""
    if fmt == "jsonl":
        return stream_jsonl(rows)
    if fmt == "csv":
        return stream_csv(rows)
    if fmt == "parquet":
        return stream_parquet(rows)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(MEDIA_TYPES)}")


def _batches(rows: Iterable[Any]) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := [as_row(r).to_dict() for r in islice(it, BATCH_ROWS)]:
        yield batch


def stream_jsonl(rows: Iterable[Any]) -> Iterator[bytes]:
    for batch in _batches(rows):
        yield "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in batch).encode()


def stream_csv(rows: Iterable[Any]) -> Iterator[bytes]:
    # Vectors are JSON-encoded in one cell each: the action dimension varies between models and datasets,
    # and a fixed set of columns keeps every export of every replay loadable with the same code.
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FIELDS)
    for batch in _batches(rows):
        for r in batch:
            writer.writerow([r["episode"], r["step"], _cell(r["predicted_action"]), _cell(r["raw_action"]),
                             _cell(r["recorded_action"]),
                             r["safety_decision"] or "", ";".join(r["safety_flags"]), r["safety_profile"] or "",
                             "" if r["latency_ms"] is None else r["latency_ms"]])
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _cell(values: list[float] | None) -> str:
    return "" if values is None else json.dumps(values, separators=(",", ":"))


def stream_parquet(rows: Iterable[Any]) -> Iterator[bytes]:
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, PARQUET_SCHEMA) as writer:
        for batch in _batches(rows):
            writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
    data = sink.getbuffer()
    for offset in range(0, len(data), CHUNK_BYTES):
        yield bytes(data[offset:offset + CHUNK_BYTES])
