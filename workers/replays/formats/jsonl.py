"""Reader for our own simple format: a directory with episodes.jsonl and PNG/JPEG frames.

See workers/replays/FORMAT.md. Each line is one step; the text is small, so the whole index is parsed at
open and only image files are read lazily.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workers.replays.errors import DatasetError
from workers.replays.formats.base import Dataset, EpisodeInfo, Selection, Step
from workers.replays.formats.common import inside, load_jsonl, require
from workers.replays.formats.images import decode_image_file

INDEX = "episodes.jsonl"


class JsonlDataset(Dataset):
    format = "jsonl"

    def __init__(self, path: Path):
        super().__init__(path)
        rows = load_jsonl(self.path / INDEX, INDEX)
        if not rows:
            raise DatasetError(INDEX, "no steps")
        self._steps: dict[int, list[dict]] = {}
        for n, row in enumerate(rows, start=1):
            self._add(row, f"{INDEX} line {n}")
        self._infos = {e: self._info(e, steps) for e, steps in sorted(self._steps.items())}

    def _add(self, row: dict, where: str) -> None:
        episode, step = require(row, "episode", where), require(row, "step", where)
        if not isinstance(episode, int) or not isinstance(step, int) or episode < 0 or step < 0:
            raise DatasetError(where, "'episode' and 'step' must be non-negative integers")
        images = row.get("images")
        if images is None and "image" in row:
            images = {"image": row["image"]}  # shorthand for a single camera
        if not isinstance(images, dict) or not images or not all(isinstance(v, str) for v in images.values()):
            raise DatasetError(where, "missing key 'images' (an object camera -> relative file path)")
        action = require(row, "action", where)
        state = row.get("state")
        if not _numbers(action) or (state is not None and not _numbers(state)):
            raise DatasetError(where, "'action' (and 'state' if given) must be lists of numbers")
        text = require(row, "instruction", where)
        self._steps.setdefault(episode, []).append({"step": step, "images": images, "action": action,
                                                    "state": state, "instruction": str(text), "where": where})

    def _info(self, episode: int, steps: list[dict]) -> EpisodeInfo:
        steps.sort(key=lambda s: s["step"])
        numbers = [s["step"] for s in steps]
        if numbers != list(range(len(steps))):
            raise DatasetError(f"{INDEX} episode {episode}", "steps must be numbered 0..T-1 without gaps or repeats")
        return EpisodeInfo(episode, len(steps), steps[0]["instruction"], sorted(steps[0]["images"]))

    def episodes(self) -> list[EpisodeInfo]:
        return list(self._infos.values())

    def _check_episode(self, sel: Selection) -> None:
        steps = self._steps[sel.info.index]
        first = steps[0]
        for s in steps[sel.start:sel.stop]:
            if sorted(s["images"]) != sel.info.cameras:
                raise DatasetError(s["where"], f"cameras {sorted(s['images'])} differ from {sel.info.cameras}")
            for key in ("action", "state"):
                if (s[key] is None) != (first[key] is None) or (s[key] and len(s[key]) != len(first[key])):
                    raise DatasetError(s["where"], f"'{key}' length differs from the episode's first step")
            for cam, rel in s["images"].items():
                if not inside(self.path, rel, s["where"]).is_file():
                    raise DatasetError(s["where"], f"image file of camera {cam!r} not found: {rel}")

    def _iter_episode(self, sel: Selection) -> Iterator[Step]:
        for s in self._steps[sel.info.index][sel.start:sel.stop]:
            where = s["where"]
            images = {cam: decode_image_file(inside(self.path, rel, where), f"{where} image {rel}")
                      for cam, rel in s["images"].items()}
            state = None if s["state"] is None else np.asarray(s["state"], dtype=np.float32)
            yield Step(sel.info.index, s["step"], images, s["instruction"], state,
                       np.asarray(s["action"], dtype=np.float32))


def _numbers(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
