"""The plot is a real PNG with safety bands drawn; every export format parses back to the same rows."""
from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from workers.replays.export import MEDIA_TYPES, stream_rows
from workers.replays.plot import plot_replay
from workers.replays.rows import FIELDS


def make_rows(n: int = 40, flagged: range = range(0)) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        bad = i in flagged
        predicted = rng.normal(size=7).round(4).tolist()
        rows.append({"episode": i // 20, "step": i % 20, "predicted_action": None if bad else predicted,
                     "raw_action": predicted, "recorded_action": rng.normal(size=7).round(4).tolist(),
                     "safety_decision": "reject" if bad else "pass", "safety_flags": ["workspace"] if bad else [],
                     "safety_profile": "widowx_250@1",
                     "latency_ms": float(10 + i)})
    rows[3]["predicted_action"] = rows[3]["raw_action"] = None  # a step whose inference failed
    return rows


def render(rows: list) -> np.ndarray:
    buf = io.BytesIO()
    plot_replay(rows, buf)
    data = buf.getvalue()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img.convert("RGB"))


def count_near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 4) -> int:
    return int((np.abs(img.astype(int) - rgb).max(axis=2) <= tol).sum())


def test_plot_is_a_png_with_one_panel_per_dimension() -> None:
    img = render(make_rows())
    assert img.shape == (int((1.8 * 7 + 0.6) * 80), 800, 3)  # figure size grows with the action dims


def test_plot_shades_rejected_steps() -> None:
    # The red band (#d62728 at alpha 0.3 on white) blends to about (243, 190, 190); without rejected
    # steps only the legend's swatch has that colour, with six of them a band crosses all seven panels.
    clean = count_near(render(make_rows()), (243, 190, 190))
    assert clean < 500
    assert count_near(render(make_rows(flagged=range(10, 16))), (243, 190, 190)) > clean + 20_000


def test_plot_of_no_rows_still_renders() -> None:
    assert render([]).shape[2] == 3


def joined(rows: list, fmt: str) -> bytes:
    chunks = list(stream_rows(rows, fmt))
    assert chunks and all(isinstance(c, bytes) for c in chunks)
    return b"".join(chunks)


def test_jsonl_round_trip_in_batches() -> None:
    rows = make_rows(2500)
    chunks = list(stream_rows(rows, "jsonl"))
    assert len(chunks) == 3  # one per batch of 1000 rows: bounded memory for big replays
    parsed = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert parsed == rows


def test_csv_round_trip() -> None:
    rows = make_rows()
    reader = csv.DictReader(io.StringIO(joined(rows, "csv").decode()))
    assert tuple(reader.fieldnames) == FIELDS
    back = list(reader)
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert (int(got["episode"]), int(got["step"])) == (want["episode"], want["step"])
        assert (json.loads(got["predicted_action"]) if got["predicted_action"] else None) == want["predicted_action"]
        assert json.loads(got["recorded_action"]) == want["recorded_action"]
        assert got["safety_decision"] == want["safety_decision"]
        assert (got["safety_flags"].split(";") if got["safety_flags"] else []) == want["safety_flags"]
        assert float(got["latency_ms"]) == want["latency_ms"]


def test_parquet_round_trip_accepts_orm_like_objects() -> None:
    rows = make_rows()
    objects = [SimpleNamespace(**r) for r in rows]  # what the job store hands over
    table = pq.read_table(io.BytesIO(joined(objects, "parquet")))
    assert table.to_pylist() == rows


def test_empty_exports_and_unknown_format() -> None:
    assert joined([], "csv").decode().strip() == ",".join(FIELDS)
    assert pq.read_table(io.BytesIO(joined([], "parquet"))).num_rows == 0
    assert list(stream_rows([], "jsonl")) == []
    assert set(MEDIA_TYPES) == {"jsonl", "csv", "parquet"}
    with pytest.raises(ValueError, match="unknown export format"):
        stream_rows([], "xlsx")
