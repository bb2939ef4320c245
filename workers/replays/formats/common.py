"""Small helpers shared by the format readers: safe joins, JSON and parquet loading with typed errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workers.replays.errors import DatasetError, reason


def inside(root: Path, rel: str, where: str) -> Path:
    """Join `rel` (from an untrusted metadata file) under `root`, refusing escapes via .. or symlinks."""
    root_real = root.resolve()
    path = (root / rel).resolve()
    if path != root_real and root_real not in path.parents:
        raise DatasetError(where, f"path {rel!r} points outside the dataset")
    return path


def load_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(where, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(where, f"not valid JSON ({reason(exc, path)})") from None


def load_jsonl(path: Path, where: str) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(where, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(where, f"cannot read ({reason(exc, path)})") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where} line {n}", f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where} line {n}", "expected a JSON object")
        rows.append(row)
    return rows


def require(row: dict, key: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise DatasetError(where, f"missing key {key!r}")
    return row[key]


def read_parquet(path: Path, where: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    if not path.is_file():
        raise DatasetError(where, f"parquet file not found: {path.name}")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated parquet file {path.name} ({reason(exc, path)})") from None


def read_rows(path: Path, where: str, columns: list[str], lo: int, hi: int) -> pa.Table:
    """Rows lo..hi-1 of a parquet file, decoding only the row groups that hold them.

    A v3.0 data file packs many episodes (up to ~100 MB); filtering would decode all of it per episode.
    """
    try:
        with pq.ParquetFile(path) as pf:
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            groups = [i for i in range(len(sizes)) if starts[i] < hi and starts[i + 1] > lo]
            table = pf.read_row_groups(groups, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated parquet file {path.name} ({reason(exc, path)})") from None
    return table.slice(lo - int(starts[groups[0]]) if groups else 0, hi - lo)


def parquet_schema(path: Path, where: str) -> pa.Schema:
    if not path.is_file():
        raise DatasetError(where, f"parquet file not found: {path.name}")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(where, f"corrupt or truncated parquet file {path.name} ({reason(exc, path)})") from None


def vector_column(table: pa.Table, name: str, where: str) -> np.ndarray:
    """A list<float> column as a (rows, dim) float32 array; ragged rows are an error."""
    col = table.column(name).combine_chunks()
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 1)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        raise DatasetError(f"{where} column {name!r}", f"expected a list of numbers, got {col.type}")
    if col.null_count:
        raise DatasetError(f"{where} column {name!r}", "has missing (null) rows")
    lengths = set(col.value_lengths().to_pylist()) if not pa.types.is_fixed_size_list(col.type) \
        else {col.type.list_size}
    if len(lengths) > 1:
        raise DatasetError(f"{where} column {name!r}", f"rows have different lengths {sorted(lengths)}")
    dim = lengths.pop() if lengths else 0
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(col), dim)
