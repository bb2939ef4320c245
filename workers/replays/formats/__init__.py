"""Readers for recorded trajectory datasets, behind one interface, and `open_dataset` to pick one."""
from __future__ import annotations

from pathlib import Path

from workers.replays.errors import DatasetError
from workers.replays.formats.base import Dataset, EpisodeInfo, Selection, Step, StepRange
from workers.replays.formats.jsonl import JsonlDataset
from workers.replays.formats.lerobot import LeRobotDataset
from workers.replays.formats.npz import NpzDataset
from workers.replays.formats.robomimic import HDF5_MAGIC, RobomimicDataset

__all__ = ["Dataset", "DatasetError", "EpisodeInfo", "Selection", "Step", "StepRange", "detect_format",
           "open_dataset"]

ZIP_MAGIC = b"PK\x03\x04"


def detect_format(path: Path) -> tuple[str, Path]:
    """("lerobot" | "jsonl" | "robomimic" | "npz", the path to open), from the layout and magic bytes."""
    path = Path(path)
    if path.is_dir():
        root = _dataset_root(path)
        return ("lerobot" if (root / "meta" / "info.json").is_file() else "jsonl"), root
    if not path.is_file():
        raise DatasetError(path.name or str(path), "dataset not found")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic == HDF5_MAGIC or path.suffix.lower() in (".hdf5", ".h5"):
        return "robomimic", path
    if magic.startswith(ZIP_MAGIC) or path.suffix.lower() == ".npz":
        return "npz", path
    raise DatasetError(path.name, "unknown dataset file type; expected .hdf5/.h5 (robomimic) or .npz")


def _dataset_root(path: Path) -> Path:
    # An extracted archive often wraps the dataset in one top-level folder: look one level down.
    for candidate in (path, *_only_child(path)):
        if (candidate / "meta" / "info.json").is_file() or (candidate / "episodes.jsonl").is_file():
            return candidate
    raise DatasetError(path.name, "not a dataset directory: expected meta/info.json (LeRobot) "
                                  "or episodes.jsonl (see workers/replays/FORMAT.md)")


def _only_child(path: Path) -> list[Path]:
    children = [c for c in path.iterdir() if not c.name.startswith((".", "__MACOSX"))]
    return children if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink() else []


def open_dataset(path: Path, *, instruction: str | None = None) -> Dataset:
    """Open and structurally check a dataset's metadata; frames are decoded later, lazily.

    `instruction` overrides a missing instruction in robomimic HDF5 files, which usually carry none.
    """
    kind, root = detect_format(path)
    if kind == "lerobot":
        return LeRobotDataset(root)
    if kind == "jsonl":
        return JsonlDataset(root)
    if kind == "robomimic":
        return RobomimicDataset(root, instruction=instruction)
    return NpzDataset(root)
