"""LeRobot metadata: meta/info.json plus the episode and task tables of the v2.x and v3.0 layouts.

v2.x (v2.0, v2.1): meta/episodes.jsonl {"episode_index", "tasks", "length"} and meta/tasks.jsonl
{"task_index", "task"}; one parquet (and one MP4 per camera) per episode.
v3.0: meta/episodes/chunk-*/file-*.parquet (episode_index, tasks, length, data/chunk_index,
data/file_index, videos/<key>/{chunk_index,file_index,from_timestamp}), and meta/tasks.parquet, written
by pandas with the task string as the index and a task_index column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from workers.replays.errors import DatasetError
from workers.replays.formats.common import load_json, load_jsonl, read_parquet, require

V2_VERSIONS = ("v2.0", "v2.1")
V3_VERSIONS = ("v3.0",)
INFO = "meta/info.json"


@dataclass
class EpisodeMeta:
    index: int
    length: int
    tasks: list[str]
    # v3.0 only: where the episode's rows and video frames live.
    locations: dict[str, Any] = field(default_factory=dict)


@dataclass
class LeRobotMeta:
    version: str
    fps: float
    features: dict[str, dict]
    data_path: str
    video_path: str | None
    chunks_size: int
    tasks: dict[int, str]
    episodes: list[EpisodeMeta]
    robot_type: str | None = None

    @property
    def cameras(self) -> dict[str, str]:
        """Camera feature key -> "image" (bytes in the parquet) or "video" (MP4)."""
        return {k: f["dtype"] for k, f in self.features.items() if f.get("dtype") in ("image", "video")}


def load_meta(root: Path) -> LeRobotMeta:
    info = load_json(root / INFO, INFO)
    if not isinstance(info, dict):
        raise DatasetError(INFO, "expected a JSON object")
    version = str(require(info, "codebase_version", INFO))
    if version not in V2_VERSIONS + V3_VERSIONS:
        raise DatasetError(f"{INFO} codebase_version",
                           f"unsupported version {version!r}; supported: {', '.join(V2_VERSIONS + V3_VERSIONS)}")
    features = _features(info)
    fps = require(info, "fps", INFO)
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise DatasetError(f"{INFO} fps", "must be a positive number")
    v3 = version in V3_VERSIONS
    tasks = _tasks_v3(root) if v3 else _tasks_v2(root)
    episodes = _episodes_v3(root, features) if v3 else _episodes_v2(root)
    video_path = info.get("video_path")
    if any(f.get("dtype") == "video" for f in features.values()) and not video_path:
        raise DatasetError(INFO, "has video features but no 'video_path'")
    robot = info.get("robot_type")
    return LeRobotMeta(version, float(fps), features, str(require(info, "data_path", INFO)), video_path,
                       int(info.get("chunks_size", 1000)), tasks, episodes,
                       robot[:64] if isinstance(robot, str) else None)


def _features(info: dict) -> dict[str, dict]:
    features = require(info, "features", INFO)
    if not isinstance(features, dict):
        raise DatasetError(f"{INFO} features", "expected an object")
    for key in ("action", "episode_index"):
        if key not in features:
            raise DatasetError(f"{INFO} features", f"missing feature {key!r}")
    if not any(f.get("dtype") in ("image", "video") for f in features.values() if isinstance(f, dict)):
        raise DatasetError(f"{INFO} features", "no camera feature (dtype 'image' or 'video')")
    return features


def _tasks_v2(root: Path) -> dict[int, str]:
    where = "meta/tasks.jsonl"
    rows = load_jsonl(root / where, where)
    return {int(require(r, "task_index", where)): str(require(r, "task", where)) for r in rows}


def _episodes_v2(root: Path) -> list[EpisodeMeta]:
    where = "meta/episodes.jsonl"
    out = []
    for n, row in enumerate(load_jsonl(root / where, where), start=1):
        at = f"{where} line {n}"
        tasks = require(row, "tasks", at)
        out.append(EpisodeMeta(int(require(row, "episode_index", at)), int(require(row, "length", at)),
                               [str(t) for t in tasks] if isinstance(tasks, list) else [str(tasks)]))
    if not out:
        raise DatasetError(where, "no episodes")
    return out


def _tasks_v3(root: Path) -> dict[int, str]:
    where = "meta/tasks.parquet"
    table = read_parquet(root / where, where)
    if "task_index" not in table.column_names:
        raise DatasetError(where, "missing column 'task_index'")
    # pandas stores the task strings as its index: a column named "task" or "__index_level_0__".
    text_cols = [c for c in table.column_names if c != "task_index" and _is_text(table.schema.field(c).type)]
    name = "task" if "task" in text_cols else (text_cols[0] if text_cols else None)
    if name is None:
        raise DatasetError(where, "no task text column")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(),
                                           table.column(name).to_pylist(), strict=True)}


def _episodes_v3(root: Path, features: dict[str, dict]) -> list[EpisodeMeta]:
    where = "meta/episodes"
    files = sorted((root / where).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(where, "no chunk-*/file-*.parquet episode metadata")
    videos = [k for k, f in features.items() if f.get("dtype") == "video"]
    needed = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
    needed += [f"videos/{k}/{c}" for k in videos for c in ("chunk_index", "file_index", "from_timestamp")]
    out = []
    for path in files:
        at = f"{where}/{path.parent.name}/{path.name}"
        table = read_parquet(path, at)
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise DatasetError(at, f"missing column(s) {missing}")
        for row in table.select(needed).to_pylist():
            tasks = row["tasks"]
            out.append(EpisodeMeta(int(row["episode_index"]), int(row["length"]),
                                   [str(t) for t in tasks] if isinstance(tasks, list) else [str(tasks)],
                                   {k: row[k] for k in needed[3:]}))
    return out


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)
