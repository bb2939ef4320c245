"""Reader for robomimic-layout HDF5 files (also LIBERO's, which uses the same tree).

data/demo_N/actions (T, D); data/demo_N/obs/<camera> uint8 (T, H, W, 3) for keys ending in "_image"
or "_rgb"; state is the concatenation of the low-dimensional obs keys in STATE_KEYS that are present.
The instruction is taken from the first of: the caller's override, a demo attribute, a data attribute
("language_instruction" / "instruction", or LIBERO's problem_info JSON). Note robosuite renders images
upside down; they are replayed as stored, since a policy trained on them expects the same.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from workers.replays.errors import DatasetError, reason
from workers.replays.formats.base import Dataset, EpisodeInfo, Selection, Step

CAMERA_SUFFIXES = ("_image", "_rgb")
STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "ee_pos", "ee_ori", "gripper_states")
INSTRUCTION_ATTRS = ("language_instruction", "instruction", "lang")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
BLOCK = 64  # steps read per HDF5 slice


class RobomimicDataset(Dataset):
    format = "robomimic-hdf5"

    def __init__(self, path: Path, instruction: str | None = None):
        super().__init__(path)
        self._file = _open(self.path)
        try:
            self._infos = self._scan(instruction)
        except (OSError, KeyError) as exc:
            self._file.close()
            raise DatasetError(self.path.name, f"corrupt or truncated HDF5 file ({reason(exc, self.path)})") from None
        except Exception:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def episodes(self) -> list[EpisodeInfo]:
        return list(self._infos.values())

    def _scan(self, override: str | None) -> dict[int, EpisodeInfo]:
        data = _local(self._file, "data", "data")
        if not isinstance(data, h5py.Group):
            raise DatasetError("data", "not a group (not a robomimic-layout file)")
        demos = sorted((int(m.group(1)), name) for name in data if (m := re.fullmatch(r"demo_(\d+)", name)))
        if not demos:
            raise DatasetError("data", "no demo_N groups")
        self.robot_type = _env_robot(data.attrs)
        infos = {}
        for index, name in demos:
            where = f"data/{name}"
            grp = _local(data, name, where)
            actions = _local(grp, "actions", f"{where}/actions")
            if not isinstance(actions, h5py.Dataset) or actions.ndim != 2:
                raise DatasetError(f"{where}/actions", "not a (T, D) array")
            obs = _local(grp, "obs", f"{where}/obs")
            cams = _cameras(obs, f"{where}/obs")
            for key in cams + [k for k in STATE_KEYS if k in obs]:
                _local(obs, key, f"{where}/obs/{key}")
            text = override or _attr_instruction(grp.attrs) or _attr_instruction(data.attrs) or ""
            if not text.strip():
                raise DatasetError(f"{where} instruction", "no instruction attribute; supply an instruction")
            infos[index] = EpisodeInfo(index, int(actions.shape[0]), text, cams)
        return infos

    def _group(self, index: int) -> h5py.Group:
        return self._file["data"][f"demo_{index}"]

    def _check_episode(self, sel: Selection) -> None:
        try:
            self._check_shapes(sel)
        except (OSError, KeyError) as exc:
            where = f"data/demo_{sel.info.index}"
            raise DatasetError(where, f"corrupt or truncated HDF5 data ({reason(exc, self.path)})") from None

    def _check_shapes(self, sel: Selection) -> None:
        grp = self._group(sel.info.index)
        where = f"data/demo_{sel.info.index}"
        length = sel.info.length
        for key in list(sel.info.cameras) + [k for k in STATE_KEYS if k in grp["obs"]]:
            ds = grp["obs"][key]
            if ds.shape[0] != length:
                raise DatasetError(f"{where}/obs/{key}", f"has {ds.shape[0]} rows but actions has {length}")
        for cam in sel.info.cameras:
            shape = grp["obs"][cam].shape
            if grp["obs"][cam].dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
                raise DatasetError(f"{where}/obs/{cam}", f"must be uint8 (T, H, W, 3), got {shape}")

    def _iter_episode(self, sel: Selection) -> Iterator[Step]:
        # Read in blocks: one slice per dataset is fast in HDF5, and a block bounds memory on long demos.
        for lo in range(sel.start, sel.stop, BLOCK):
            yield from self._block(sel.info, lo, min(lo + BLOCK, sel.stop))

    def _block(self, info: EpisodeInfo, lo: int, hi: int) -> Iterator[Step]:
        grp = self._group(info.index)
        try:
            actions = np.asarray(grp["actions"][lo:hi], dtype=np.float32)
            obs = grp["obs"]
            keys = [k for k in STATE_KEYS if k in obs]
            state = np.concatenate([np.asarray(obs[k][lo:hi], np.float32).reshape(hi - lo, -1) for k in keys],
                                   axis=1) if keys else None
            frames = {cam: obs[cam][lo:hi] for cam in info.cameras}
        except (OSError, KeyError, ValueError) as exc:
            where = f"data/demo_{info.index}"
            raise DatasetError(where, f"corrupt or truncated HDF5 data ({reason(exc, self.path)})") from None
        for i in range(hi - lo):
            yield Step(info.index, lo + i, {c: np.ascontiguousarray(f[i]) for c, f in frames.items()},
                       info.instruction, None if state is None else state[i], actions[i])


def _local(grp: h5py.Group, name: str, where: str) -> h5py.Group | h5py.Dataset:
    """The member `name`, refused if it lives outside this file (an upload must not read server files).

    External links, external raw storage and virtual datasets can all point HDF5 reads at other files.
    """
    link = grp.get(name, getlink=True)
    if link is None:
        raise DatasetError(where, "missing")
    if not isinstance(link, h5py.HardLink):
        raise DatasetError(where, "links to other files or soft links are not supported")
    obj = grp[name]
    if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
        raise DatasetError(where, "external or virtual dataset storage is not supported")
    return obj


def _open(path: Path) -> h5py.File:
    try:
        with path.open("rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise DatasetError(path.name, f"cannot read file ({reason(exc, path)})") from None
    if magic != HDF5_MAGIC:
        raise DatasetError(path.name, "not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(path.name, f"corrupt or truncated HDF5 file ({reason(exc, path)})") from None


def _cameras(obs: h5py.Group, where: str) -> list[str]:
    if not isinstance(obs, h5py.Group):
        raise DatasetError(where, "not a group")
    cams = sorted(k for k in obs if k.endswith(CAMERA_SUFFIXES))
    if not cams:
        raise DatasetError(where, f"no camera (a key ending in {' or '.join(CAMERA_SUFFIXES)})")
    return cams


def _env_robot(attrs: h5py.AttributeManager) -> str | None:
    """The recorded robot from robomimic's `env_args` JSON (robosuite's `env_kwargs.robots`, a name or a
    list of one per arm: the first arm's), or None; metadata never fails a dataset."""
    try:
        raw = attrs["env_args"] if "env_args" in attrs else None
        env = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else {}
        robots = (env.get("env_kwargs") or {}).get("robots")
    except (ValueError, TypeError, AttributeError):
        return None
    robot = robots[0] if isinstance(robots, list) and robots else robots
    return robot[:64] if isinstance(robot, str) else None


def _attr_instruction(attrs: h5py.AttributeManager) -> str | None:
    for name in INSTRUCTION_ATTRS:
        if name in attrs:
            value = attrs[name]
            return value.decode() if isinstance(value, bytes) else str(value)
    if "problem_info" in attrs:  # LIBERO keeps the instruction inside a JSON attribute
        try:
            return json.loads(attrs["problem_info"]).get("language_instruction")
        except (ValueError, AttributeError):
            return None
    return None
