"""The common reader interface every replay dataset format implements.

A reader knows its episodes cheaply (from metadata) and decodes frames lazily, one episode at a time,
so a replay of a large dataset never holds more than one episode's frames in memory.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.replays.errors import DatasetError

# (start, stop) within each selected episode, half-open; stop None means "to the end".
StepRange = tuple[int, int | None]


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    length: int
    instruction: str
    cameras: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "length": self.length, "instruction": self.instruction,
                "cameras": list(self.cameras)}


@dataclass
class Step:
    """One recorded step: what the policy sees, and what the robot actually did."""

    episode: int
    step: int
    images: dict[str, np.ndarray]
    instruction: str
    state: np.ndarray | None
    recorded_action: np.ndarray


@dataclass(frozen=True)
class Selection:
    info: EpisodeInfo
    start: int
    stop: int


class Dataset(abc.ABC):
    """A recorded trajectory dataset. Subclasses implement `episodes` and `_iter_episode`.

    Not thread-safe (HDF5 and video handles): open one per thread or task.
    """

    format: str = "unknown"
    # The recorded robot as the dataset names it (LeRobot `robot_type`, robosuite's robot), or None: a replay
    # that names no robot_config is judged against the safety profile this maps to.
    robot_type: str | None = None

    def __init__(self, path: Path):
        self.path = Path(path)

    @abc.abstractmethod
    def episodes(self) -> list[EpisodeInfo]:
        """All episodes, from metadata only (no frame decoding)."""

    @abc.abstractmethod
    def _iter_episode(self, sel: Selection) -> Iterator[Step]:
        """Yield the steps sel.start..sel.stop-1 of one episode, decoded."""

    def _check_episode(self, sel: Selection) -> None:
        """Cheap structural checks of one episode (lengths, keys); formats override."""
        return None

    def close(self) -> None:
        """Release open file handles; formats holding any override."""
        return None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def select(self, episodes: Iterable[int] | None = None,
               step_range: StepRange | None = None) -> list[Selection]:
        return select_steps(self.episodes(), episodes, step_range)

    def count_steps(self, episodes: Iterable[int] | None = None,
                    step_range: StepRange | None = None) -> int:
        return sum(s.stop - s.start for s in self.select(episodes, step_range))

    def validate(self, episodes: Iterable[int] | None = None,
                 step_range: StepRange | None = None) -> int:
        """Check the whole selection's structure and decode each episode's first selected step.

        Returns the number of selected steps. Raises DatasetError on the first problem found.
        """
        selection = self.select(episodes, step_range)
        for sel in selection:
            self._check_episode(sel)
        for sel in selection:
            first = Selection(sel.info, sel.start, sel.start + 1)
            steps = list(self._iter_episode(first))
            if len(steps) != 1:
                raise DatasetError(f"episode {sel.info.index}", f"step {sel.start} could not be read")
            check_step(steps[0])
        return sum(s.stop - s.start for s in selection)

    def iter_steps(self, episodes: Iterable[int] | None = None,
                   step_range: StepRange | None = None) -> Iterator[Step]:
        for sel in self.select(episodes, step_range):
            # Again here, not only in validate: a worker resuming a replay iterates without validating,
            # and a bad episode must fail as a DatasetError, not as an IndexError mid-episode.
            self._check_episode(sel)
            for step in self._iter_episode(sel):
                check_step(step)
                yield step


def select_steps(infos: list[EpisodeInfo], episodes: Iterable[int] | None,
                 step_range: StepRange | None) -> list[Selection]:
    by_index = {info.index: info for info in infos}
    wanted = list(by_index) if episodes is None else [int(e) for e in episodes]
    unknown = [e for e in wanted if e not in by_index]
    if unknown:
        known = sorted(by_index)
        span = f"{known[0]}..{known[-1]}" if known else "none"
        raise DatasetError("episodes", f"unknown episode(s) {unknown}; the dataset has {span}")
    if len(set(wanted)) != len(wanted):
        raise DatasetError("episodes", "episode indices must not repeat")
    start, stop = _parse_range(step_range)
    out = []
    for e in wanted:
        info = by_index[e]
        hi = info.length if stop is None else min(stop, info.length)
        if start < hi:
            out.append(Selection(info, start, hi))
    if not out:
        raise DatasetError("step_range" if step_range else "episodes", "the selection contains no steps")
    return out


def _parse_range(step_range: StepRange | None) -> tuple[int, int | None]:
    if step_range is None:
        return 0, None
    try:
        start, stop = step_range
    except (TypeError, ValueError):
        raise DatasetError("step_range", "expected (start, stop)") from None
    if not isinstance(start, int) or start < 0:
        raise DatasetError("step_range", "start must be a non-negative integer")
    if stop is not None and (not isinstance(stop, int) or stop <= start):
        raise DatasetError("step_range", "stop must be an integer greater than start")
    return start, stop


def check_step(step: Step) -> None:
    """Refuse a decoded step the policy could not use, naming where it came from."""
    where = f"episode {step.episode} step {step.step}"
    if not step.images:
        raise DatasetError(where, "no camera images")
    for cam, img in step.images.items():
        check_image_array(f"{where} camera {cam}", img)
    act = step.recorded_action
    if act.ndim != 1 or act.size == 0 or not np.all(np.isfinite(act)):
        raise DatasetError(f"{where} action", f"must be a non-empty finite vector, got shape {act.shape}")
    if step.state is not None and (step.state.ndim != 1 or not np.all(np.isfinite(step.state))):
        raise DatasetError(f"{where} state", f"must be a finite vector, got shape {step.state.shape}")
    if not isinstance(step.instruction, str) or not step.instruction.strip():
        raise DatasetError(f"{where} instruction", "missing or empty instruction")


def check_image_array(where: str, img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise DatasetError(where, f"image must be HxWx3 uint8, got shape {shape} dtype {dtype}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise DatasetError(where, "image is empty")
