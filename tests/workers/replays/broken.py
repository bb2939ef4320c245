"""Helpers for the broken-dataset tests: damage a file, expect a DatasetError."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.replays import DatasetError, open_dataset


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def refuse(path: Path, *match: str, **select) -> DatasetError:
    """Open and validate; the DatasetError's text must contain every `match` fragment."""
    with pytest.raises(DatasetError) as info:
        open_dataset(path).validate(**select)
    for fragment in match:
        assert fragment in str(info.value), str(info.value)
    return info.value


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
