"""Replays: upload a recorded dataset (or name one on the server), follow it with a progress bar."""
from __future__ import annotations

import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any

from vlaapi_client.transport import Transport, new_idempotency_key

TERMINAL = ("succeeded", "failed", "canceled")


def run(http: Transport, dataset: str | Path | None, model: str, *, server_path: str | None = None,
        episodes: list[int] | None = None, instruction: str | None = None, robot_type: str | None = None,
        wait: bool = True, progress: bool | IO[str] = True, poll_s: float = 0.5,
        timeout: float = 3600.0) -> dict[str, Any]:
    """Submit a replay and, with `wait`, follow it to the end; returns the replay's JSON (with `summary`).

    `dataset` is a local file or directory (a directory is zipped on the fly) uploaded with the request;
    `server_path` names a dataset under the server's REPLAY_DATA_ROOT instead. `progress` draws a bar on
    stderr (or the given text stream); False for none."""
    spec: dict[str, Any] = {"model": model}
    if episodes is not None:
        spec["episodes"] = list(episodes)
    if instruction:
        spec["instruction"] = instruction
    if robot_type:
        spec["robot_config"] = {"type": robot_type}
    key = new_idempotency_key()  # a retried upload returns the first replay, never starts a second
    if server_path is not None:
        body = http.request("POST", "/v1/replays", json={**spec, "dataset": {"path": server_path}},
                            idempotency_key=key).json()
    else:
        with _packed(Path(dataset)) as (name, fh):
            body = http.request("POST", "/v1/replays", files={"file": (name, fh)}, data={"spec": json.dumps(spec)},
                                idempotency_key=key, timeout=600).json()
    if not wait:
        return body
    stream = (sys.stderr if progress is True else progress) or None
    return follow(http, body["id"], stream, poll_s, timeout)


def follow(http: Transport, replay_id: str, stream: IO[str] | None, poll_s: float, timeout: float) -> dict[str, Any]:
    bar = Bar(stream, f"replay {replay_id[:8]}")
    end = time.monotonic() + timeout
    while True:
        body = http.request("GET", f"/v1/replays/{replay_id}").json()
        bar.show(body["progress"]["done_steps"], body["progress"]["total_steps"], body["state"])
        if body["state"] in TERMINAL or time.monotonic() >= end:
            bar.close()
            return body
        time.sleep(poll_s)


class Bar:
    """A one-line text progress bar (no dependency): steps done of total, percent, rate and ETA."""

    WIDTH = 30

    def __init__(self, stream: IO[str] | None, label: str):
        self.stream, self.label, self.started = stream, label, time.monotonic()

    def show(self, done: int, total: int, state: str) -> None:
        if self.stream is None:
            return
        frac = done / total if total else 0.0
        filled = int(self.WIDTH * frac)
        rate = done / max(time.monotonic() - self.started, 1e-6)
        eta = f"{(total - done) / rate:.0f}s" if rate > 0 and done < total else "-"
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} "
                          f"{frac:6.1%} {rate:.1f} steps/s eta {eta} {state:<9}")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


class _packed:
    """The file to upload: the path itself, or a temporary zip of a directory (deleted afterwards)."""

    def __init__(self, path: Path):
        self.path, self.fh = path, None

    def __enter__(self) -> tuple[str, IO[bytes]]:
        if self.path.is_file():
            self.fh = self.path.open("rb")
            return self.path.name, self.fh
        if not self.path.is_dir():
            raise FileNotFoundError(self.path)
        self.fh = tempfile.TemporaryFile()
        with zipfile.ZipFile(self.fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(self.path.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(self.path).as_posix())
        self.fh.seek(0)
        return f"{self.path.name or 'dataset'}.zip", self.fh

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()
