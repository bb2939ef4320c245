"""Broken LeRobot datasets are refused with a DatasetError naming the field or file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.workers.replays.broken import edit_json, refuse, truncate
from tests.workers.replays.recorded import encode_image, encode_mp4
from tests.workers.replays.writers import write_lerobot_v21, write_lerobot_v30
from workers.replays import DatasetError, open_dataset

V21_EP0 = "data/chunk-000/episode_000000.parquet"
V30_DATA = "data/chunk-000/file-000.parquet"


# ------------------------------------------------------------------------------------------- LeRobot


@pytest.mark.parametrize("key", ["codebase_version", "features", "fps", "data_path"])
def test_lerobot_missing_info_key(tmp_path: Path, key: str) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    edit_json(tmp_path / "meta/info.json", lambda d: d.pop(key))
    err = refuse(tmp_path, key)
    assert err.field.startswith("meta/info.json")


def test_lerobot_missing_action_feature(tmp_path: Path) -> None:
    write_lerobot_v30(tmp_path, episodes=1)
    edit_json(tmp_path / "meta/info.json", lambda d: d["features"].pop("action"))
    refuse(tmp_path, "missing feature 'action'")


def test_lerobot_unsupported_version(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    edit_json(tmp_path / "meta/info.json", lambda d: d.update(codebase_version="v1.6"))
    refuse(tmp_path, "unsupported version 'v1.6'")


def test_lerobot_v21_length_disagrees(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=2)
    lines = [json.loads(x) for x in (tmp_path / "meta/episodes.jsonl").read_text().splitlines()]
    lines[1]["length"] = 12
    (tmp_path / "meta/episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    refuse(tmp_path, "episode 1", "says 12 frames", "has 10")


def test_lerobot_v30_length_disagrees(tmp_path: Path) -> None:
    write_lerobot_v30(tmp_path, episodes=3)
    table = pq.read_table(tmp_path / V30_DATA)
    pq.write_table(table.slice(0, 25), tmp_path / V30_DATA)  # episode 2 loses 5 rows
    refuse(tmp_path, "episode 2", "has 5")
    assert open_dataset(tmp_path).validate(episodes=[0, 1]) == 20  # the intact ones still pass


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_truncated_parquet(tmp_path: Path, version: str) -> None:
    (write_lerobot_v21 if version == "v2.1" else write_lerobot_v30)(tmp_path, episodes=2)
    truncate(tmp_path / (V21_EP0 if version == "v2.1" else V30_DATA))
    refuse(tmp_path, "corrupt or truncated parquet")


def test_lerobot_truncated_episode_metadata(tmp_path: Path) -> None:
    write_lerobot_v30(tmp_path, episodes=2)
    truncate(tmp_path / "meta/episodes/chunk-000/file-000.parquet")
    refuse(tmp_path, "meta/episodes", "corrupt or truncated parquet")


def test_lerobot_missing_tasks_file(tmp_path: Path) -> None:
    write_lerobot_v30(tmp_path, episodes=1)
    (tmp_path / "meta/tasks.parquet").unlink()
    refuse(tmp_path, "meta/tasks.parquet", "not found")


def test_lerobot_task_index_unknown(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    (tmp_path / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 7, "task": "other"}) + "\n")
    refuse(tmp_path, "task 0 is not in the task table")


def test_lerobot_missing_column(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    table = pq.read_table(tmp_path / V21_EP0)
    pq.write_table(table.drop_columns(["action"]), tmp_path / V21_EP0)
    refuse(tmp_path, "missing column(s) ['action']")


def _replace_image_bytes(path: Path, key: str, data: bytes) -> None:
    table = pq.read_table(path)
    cells = table.column(key).to_pylist()
    cells[0] = {"bytes": data, "path": "x"}
    pq.write_table(table.set_column(table.column_names.index(key), key, pa.array(cells, table.schema.field(key).type)),
                   path)


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "WEBP"])
def test_lerobot_unsupported_image_encoding(tmp_path: Path, fmt: str) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    _replace_image_bytes(tmp_path / V21_EP0, "observation.images.top", encode_image(np.zeros((8, 8, 3), np.uint8), fmt))
    refuse(tmp_path, "unsupported image encoding", "only PNG and JPEG")


def test_lerobot_truncated_png_in_parquet(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=1)
    png = encode_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    _replace_image_bytes(tmp_path / V21_EP0, "observation.images.top", png[: len(png) // 2])
    refuse(tmp_path, "corrupt or truncated PNG")


def test_lerobot_missing_video(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=2, video=True)
    (tmp_path / "videos/chunk-000/observation.images.top/episode_000001.mp4").unlink()
    refuse(tmp_path, "episode_000001.mp4", "not found")


def test_lerobot_truncated_video(tmp_path: Path) -> None:
    write_lerobot_v30(tmp_path, episodes=3, video=True)
    truncate(tmp_path / "videos/observation.images.top/chunk-000/file-000.mp4", 0.4)
    with pytest.raises(DatasetError, match="video"):
        ds = open_dataset(tmp_path)
        ds.validate()
        list(ds.iter_steps())


def test_lerobot_path_template_escaping_the_dataset(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path / "ds", episodes=1)
    edit_json(tmp_path / "ds/meta/info.json", lambda d: d.update(data_path="../../etc/{episode_index}.parquet"))
    refuse(tmp_path / "ds", "outside the dataset")


def test_video_that_is_really_a_playlist_is_not_followed(tmp_path: Path) -> None:
    write_lerobot_v21(tmp_path, episodes=1, video=True)
    video = tmp_path / "videos/chunk-000/observation.images.top/episode_000000.mp4"
    video.write_text(f"#EXTM3U\n#EXTINF:10.0,\nfile://{tmp_path / 'meta/info.json'}\n#EXT-X-ENDLIST\n")
    refuse(tmp_path, "corrupt or truncated video")


def test_lerobot_video_shorter_than_its_episode(tmp_path: Path) -> None:
    rec = write_lerobot_v30(tmp_path, episodes=3, video=True)
    frames = np.concatenate([rec.images[e]["observation.images.top"] for e in range(3)])[:-1]
    encode_mp4(tmp_path / "videos/observation.images.top/chunk-000/file-000.mp4", frames)
    assert open_dataset(tmp_path).validate(episodes=[0, 1]) == 20
    refuse(tmp_path, "episode 2 needs a frame at 2.900s")
