"""Reader for LeRobot datasets, layouts v2.0/v2.1 (one file per episode) and v3.0 (many per file).

Camera features of dtype "image" are read from the parquet (HF datasets' Image struct with PNG/JPEG
bytes); dtype "video" from MP4 files at each row's timestamp (plus the episode's from_timestamp in
v3.0). Instructions come from task_index through the task table, actions from `action`, state from
`observation.state` when present.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from workers.replays.errors import DatasetError
from workers.replays.formats.base import Dataset, EpisodeInfo, Selection, Step
from workers.replays.formats.common import inside, parquet_schema, read_parquet, read_rows, vector_column
from workers.replays.formats.images import decode_image_bytes, decode_image_file
from workers.replays.formats.lerobot_meta import V3_VERSIONS, EpisodeMeta, load_meta
from workers.replays.formats.video import check_video_header, decode_frames, video_duration

STATE = "observation.state"


class LeRobotDataset(Dataset):
    def __init__(self, path: Path):
        super().__init__(path)
        self.meta = load_meta(self.path)
        self.v3 = self.meta.version in V3_VERSIONS
        self.format = f"lerobot-{self.meta.version}"
        self.robot_type = self.meta.robot_type
        self._by_index = {e.index: e for e in self.meta.episodes}
        self._episode_columns: dict[Path, np.ndarray] = {}
        self._durations: dict[Path, float | None] = {}

    def episodes(self) -> list[EpisodeInfo]:
        cams = list(self.meta.cameras)
        return [EpisodeInfo(e.index, e.length, e.tasks[0] if e.tasks else "", cams) for e in self.meta.episodes]

    def check_video_headers(self, episodes: list[int] | None, keyframes: int = 0) -> None:
        """Every selected episode's video files, held to the frame-size cap from their headers and from up to
        `keyframes` key frames in all (video.check_video_header)."""
        seen: set[Path] = set()  # v3 files hold several episodes
        for ep in self.meta.episodes:
            if episodes is not None and ep.index not in episodes:
                continue
            for key, dtype in self.meta.cameras.items():
                video = self._video_file(ep, key)[0] if dtype == "video" else None
                if video is not None and video not in seen:
                    seen.add(video)
                    keyframes -= check_video_header(video, self._where(video), keyframes, self.meta.fps)

    def _data_file(self, ep: EpisodeMeta) -> Path:
        if self.v3:
            fields = {"chunk_index": ep.locations["data/chunk_index"], "file_index": ep.locations["data/file_index"]}
        else:
            fields = {"episode_chunk": ep.index // self.meta.chunks_size, "episode_index": ep.index}
        return self._template(self.meta.data_path, fields, "data_path")

    def _video_file(self, ep: EpisodeMeta, key: str) -> tuple[Path, float]:
        """The MP4 holding camera `key` of this episode, and the episode's start time within it."""
        if self.v3:
            loc = {c: ep.locations[f"videos/{key}/{c}"] for c in ("chunk_index", "file_index", "from_timestamp")}
            fields = {"video_key": key, "chunk_index": loc["chunk_index"], "file_index": loc["file_index"]}
            return self._template(self.meta.video_path or "", fields, "video_path"), float(loc["from_timestamp"])
        fields = {"episode_chunk": ep.index // self.meta.chunks_size, "episode_index": ep.index, "video_key": key}
        return self._template(self.meta.video_path or "", fields, "video_path"), 0.0

    def _template(self, template: str, fields: dict, name: str) -> Path:
        try:
            rel = template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise DatasetError(f"meta/info.json {name}", f"bad path template {template!r} ({exc})") from None
        return inside(self.path, rel, f"meta/info.json {name}")

    def _check_episode(self, sel: Selection) -> None:
        ep = self._by_index[sel.info.index]
        path = self._data_file(ep)
        where = self._where(path)
        schema = parquet_schema(path, where)
        needed = ["action", "episode_index"] + [k for k, d in self.meta.cameras.items() if d == "image"]
        if any(d == "video" for d in self.meta.cameras.values()):
            needed.append("timestamp")
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise DatasetError(where, f"missing column(s) {missing}")
        rows = self._count_rows(path, where).get(ep.index, 0)
        if rows != ep.length:
            raise DatasetError(where, f"episode {ep.index}: metadata says {ep.length} frames, parquet has {rows}")
        table = self._read(ep, path, ["action", "timestamp"])
        vector_column(table, "action", where)
        for key in [k for k, d in self.meta.cameras.items() if d == "video"]:
            self._check_video(ep, key, table)

    def _check_video(self, ep: EpisodeMeta, key: str, table: pa.Table) -> None:
        # From the header only: a video shorter than its episode would otherwise fail mid-replay.
        video, offset = self._video_file(ep, key)
        where = self._where(video)
        if not video.is_file():
            raise DatasetError(where, f"video of camera {key!r} for episode {ep.index} not found")
        if video not in self._durations:
            self._durations[video] = video_duration(video, where)
        duration = self._durations[video]
        end = offset + max(table.column("timestamp").to_pylist(), default=0.0)
        if duration is not None and end > duration - 0.5 / self.meta.fps:
            raise DatasetError(where, f"video is {duration:.3f}s long; episode {ep.index} needs a frame at {end:.3f}s")

    def _count_rows(self, path: Path, where: str) -> dict[int, int]:
        values, counts = np.unique(self._episode_column(path, where), return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def _episode_column(self, path: Path, where: str) -> np.ndarray:
        # v3.0 files hold many episodes: read their episode_index column once, to locate each one's rows.
        if path not in self._episode_columns:
            col = read_parquet(path, where, ["episode_index"]).column("episode_index")
            self._episode_columns[path] = np.asarray(col.to_numpy())
        return self._episode_columns[path]

    def _read(self, ep: EpisodeMeta, path: Path, columns: list[str]) -> pa.Table:
        where = self._where(path)
        schema = parquet_schema(path, where)
        cols = [c for c in dict.fromkeys(columns + ["episode_index", "frame_index"]) if c in schema.names]
        rows = np.flatnonzero(self._episode_column(path, where) == ep.index)
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # contiguous, as LeRobot writes them
            table = read_rows(path, where, cols, int(rows[0]), int(rows[-1]) + 1)
        else:
            table = read_parquet(path, where, cols, filters=[("episode_index", "=", ep.index)])
        if "frame_index" in table.column_names:
            table = table.sort_by("frame_index")
        return table

    def _where(self, path: Path) -> str:
        return str(path.relative_to(self.path.resolve()))

    def _iter_episode(self, sel: Selection) -> Iterator[Step]:
        ep = self._by_index[sel.info.index]
        path = self._data_file(ep)
        where = self._where(path)
        cams = self.meta.cameras
        table = self._read(ep, path, ["action", STATE, "task_index", "timestamp"] + list(cams))
        if table.num_rows != ep.length:
            raise DatasetError(where, f"episode {ep.index}: metadata says {ep.length} frames, "
                                      f"parquet has {table.num_rows}")
        table = table.slice(sel.start, sel.stop - sel.start)
        actions = vector_column(table, "action", where)
        states = vector_column(table, STATE, where) if STATE in table.column_names else None
        frames = {k: self._camera_frames(ep, table, k, d, where, sel.start) for k, d in cams.items()}
        for i in range(table.num_rows):
            images = {k: next(it) for k, it in frames.items()}
            yield Step(ep.index, sel.start + i, images, self._instruction(ep, table, i, where),
                       None if states is None else states[i], actions[i])

    def _instruction(self, ep: EpisodeMeta, table: pa.Table, i: int, where: str) -> str:
        if "task_index" not in table.column_names:
            return ep.tasks[0] if ep.tasks else ""
        idx = table.column("task_index")[i].as_py()
        if idx not in self.meta.tasks:
            raise DatasetError(f"{where} task_index", f"task {idx} is not in the task table")
        return self.meta.tasks[idx]

    def _camera_frames(self, ep: EpisodeMeta, table: pa.Table, key: str, dtype: str,
                       where: str, first_step: int = 0) -> Iterator[np.ndarray]:
        if dtype == "video":
            video, offset = self._video_file(ep, key)
            stamps = [offset + float(t) for t in table.column("timestamp").to_pylist()]
            return decode_frames(video, stamps, self.meta.fps, self._where(video), (ep.index, first_step))
        return (self._still(cell, f"{where} column {key!r}") for cell in table.column(key).to_pylist())

    def _still(self, cell: object, where: str) -> np.ndarray:
        # HF datasets' Image feature: {"bytes": ..., "path": ...}; bytes are absent only while recording.
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return decode_image_bytes(cell["bytes"], where)
            if cell.get("path"):
                return decode_image_file(inside(self.path, cell["path"], where), where)
            raise DatasetError(where, "image has neither bytes nor path")
        if isinstance(cell, (bytes, bytearray)):
            return decode_image_bytes(bytes(cell), where)
        raise DatasetError(where, f"unsupported image cell of type {type(cell).__name__}")
