"""Batch replays of recorded trajectories: a pure library (no Celery, no web, no database).

Readers for recorded datasets (`formats`), path and upload safety (`paths`, `uploads`), per-dimension
metrics (`metrics`), a plot (`plot`) and streaming exports (`export`).
"""
from workers.replays.errors import DatasetError
from workers.replays.formats import Dataset, EpisodeInfo, Step, open_dataset
from workers.replays.paths import resolve_dataset_path
from workers.replays.uploads import discard_upload, save_upload

__all__ = [
    "Dataset",
    "DatasetError",
    "EpisodeInfo",
    "Step",
    "open_dataset",
    "resolve_dataset_path",
    "discard_upload",
    "save_upload",
]
