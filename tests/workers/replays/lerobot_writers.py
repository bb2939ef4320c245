"""Write LeRobot datasets in the v2.1 and v3.0 layouts, with images in the parquet or in MP4 files.

Mirrors what lerobot writes (meta/info.json features and path templates, HF datasets' image struct,
v3.0's relational episode table and pandas-written tasks.parquet) closely enough for our reader; stats
files are left out because replays do not read them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.workers.replays.recorded import FPS, Recorded, encode_image, encode_mp4, make_recorded

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CAMERA = "observation.images.top"


def write_lerobot_v21(root: Path, episodes: int = 2, steps: int = 10, image_hw: tuple[int, int] = (64, 64),
                      action_dim: int = 7, seed: int = 0, state_dim: int | None = 8,
                      cameras: tuple[str, ...] = (CAMERA,), video: bool = False, codec: str = "libx264",
                      switch_task: bool = False) -> Recorded:
    rec = make_recorded(episodes, steps, image_hw, action_dim, state_dim, cameras, seed, switch_task)
    tasks = _task_ids(rec)
    offset = 0
    for e in sorted(rec.actions):
        table = _frames_table(rec, e, cameras, video, tasks, offset)
        _write_parquet(root / V21_DATA.format(episode_chunk=0, episode_index=e), table)
        offset += len(rec.actions[e])
        for cam in cameras if video else ():
            encode_mp4(root / V21_VIDEO.format(episode_chunk=0, video_key=cam, episode_index=e),
                       rec.images[e][cam], codec=codec)
    episodes_lines = [{"episode_index": e, "tasks": list(dict.fromkeys(rec.instructions[e])),
                       "length": len(rec.actions[e])} for e in sorted(rec.actions)]
    _write_jsonl(root / "meta/episodes.jsonl", episodes_lines)
    _write_jsonl(root / "meta/tasks.jsonl", [{"task_index": i, "task": t} for t, i in tasks.items()])
    info = _info("v2.1", rec, cameras, video, image_hw, len(tasks), V21_DATA, V21_VIDEO)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return rec


def write_lerobot_v30(root: Path, episodes: int = 3, steps: int = 10, image_hw: tuple[int, int] = (64, 64),
                      action_dim: int = 7, seed: int = 0, state_dim: int | None = 8,
                      cameras: tuple[str, ...] = (CAMERA,), video: bool = False, codec: str = "libx264",
                      switch_task: bool = False, task_column: str = "task",
                      row_group_size: int | None = None) -> Recorded:
    """All episodes in one data file (and one MP4 per camera), as v3.0 packs them."""
    rec = make_recorded(episodes, steps, image_hw, action_dim, state_dim, cameras, seed, switch_task)
    tasks = _task_ids(rec)
    eps = sorted(rec.actions)
    tables, rows, offset = [], [], 0
    for e in eps:
        tables.append(_frames_table(rec, e, cameras, video, tasks, offset))
        n = len(rec.actions[e])
        rows.append(_episode_row(rec, e, cameras if video else (), offset, n))
        offset += n
    _write_parquet(root / V30_DATA.format(chunk_index=0, file_index=0), pa.concat_tables(tables), row_group_size)
    _write_parquet(root / "meta/episodes/chunk-000/file-000.parquet", pa.Table.from_pylist(rows))
    # pandas writes the task strings as the index: column "task" when named, "__index_level_0__" if not.
    task_table = pa.table({task_column: list(tasks), "task_index": pa.array(list(tasks.values()), pa.int64())})
    _write_parquet(root / "meta/tasks.parquet", task_table)
    for cam in cameras if video else ():
        frames = np.concatenate([rec.images[e][cam] for e in eps])
        encode_mp4(root / V30_VIDEO.format(video_key=cam, chunk_index=0, file_index=0), frames, codec=codec)
    info = _info("v3.0", rec, cameras, video, image_hw, len(tasks), V30_DATA, V30_VIDEO)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return rec


def _episode_row(rec: Recorded, e: int, video_cams: tuple[str, ...], offset: int, n: int) -> dict:
    row = {"episode_index": e, "tasks": list(dict.fromkeys(rec.instructions[e])), "length": n,
           "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": offset,
           "dataset_to_index": offset + n, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
           "stats/action/mean": rec.actions[e].mean(axis=0).tolist()}
    for cam in video_cams:
        row |= {f"videos/{cam}/chunk_index": 0, f"videos/{cam}/file_index": 0,
                f"videos/{cam}/from_timestamp": offset / FPS, f"videos/{cam}/to_timestamp": (offset + n) / FPS}
    return row


def _task_ids(rec: Recorded) -> dict[str, int]:
    texts = [t for e in sorted(rec.instructions) for t in rec.instructions[e]]
    return {t: i for i, t in enumerate(dict.fromkeys(texts))}


def _frames_table(rec: Recorded, e: int, cameras: tuple[str, ...], video: bool, tasks: dict[str, int],
                  offset: int) -> pa.Table:
    n = len(rec.actions[e])
    cols: dict[str, pa.Array] = {}
    if e in rec.states:
        cols["observation.state"] = pa.array(rec.states[e].tolist(), pa.list_(pa.float32()))
    cols["action"] = pa.array(rec.actions[e].tolist(), pa.list_(pa.float32()))
    cols["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / FPS, pa.float32())
    cols["frame_index"] = pa.array(np.arange(n), pa.int64())
    cols["episode_index"] = pa.array(np.full(n, e), pa.int64())
    cols["index"] = pa.array(np.arange(offset, offset + n), pa.int64())
    cols["task_index"] = pa.array([tasks[t] for t in rec.instructions[e]], pa.int64())
    for cam in cameras if not video else ():
        cells = [{"bytes": encode_image(img), "path": f"frame_{i:06d}.png"} for i, img in enumerate(rec.images[e][cam])]
        cols[cam] = pa.array(cells, IMAGE_STRUCT)
    return pa.table(cols)


def _info(version: str, rec: Recorded, cameras: tuple[str, ...], video: bool, image_hw: tuple[int, int],
          n_tasks: int, data_path: str, video_path: str) -> dict:
    any_ep = next(iter(rec.actions))
    features: dict[str, dict] = {
        "action": {"dtype": "float32", "shape": [rec.actions[any_ep].shape[1]], "names": None}}
    if rec.states:
        features["observation.state"] = {"dtype": "float32", "shape": [rec.states[any_ep].shape[1]], "names": None}
    for cam in cameras:
        features[cam] = {"dtype": "video" if video else "image", "shape": [*image_hw, 3],
                         "names": ["height", "width", "channels"]}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return {"codebase_version": version, "robot_type": "test-bot", "total_episodes": len(rec.actions),
            "total_frames": rec.total_steps, "total_tasks": n_tasks, "chunks_size": 1000, "fps": FPS,
            "splits": {"train": f"0:{len(rec.actions)}"}, "data_path": data_path,
            "video_path": video_path if video else None, "features": features}


def _write_parquet(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
