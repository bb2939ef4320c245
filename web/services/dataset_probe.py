"""Run workers.replays.probe in a child process, so a hostile dataset can cost the web nothing but a refusal.

Children are forked from a multiprocessing forkserver that has already imported the dataset readers: a
probe starts in milliseconds instead of the ~0.5 s those imports take, and is never forked from a
multi-threaded web process (the forkserver is single-threaded). Each child sets its own rlimits before it
reads a byte; the parent kills it at the wall-clock limit. A child that dies (memory, CPU, a crash in a C
parser) is a 422 for the file, never a 5xx.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from pathlib import Path
from typing import Any

from web.errors import ApiError
from workers.replays import probe as probe_mod

log = logging.getLogger(__name__)
_ctx_lock = threading.Lock()
_ctx: Any = None
WALL_GRACE_S = 2.0


def _context() -> Any:
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["workers.replays.formats", "workers.replays.archive",
                                        "workers.replays.probe"])
            _ctx = ctx
        return _ctx


def warm() -> None:
    """Start this process's forkserver (and its imports) in the background, so the first upload after a
    start does not pay for them."""
    def start() -> None:
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()

    threading.Thread(target=start, name="probe-forkserver", daemon=True).start()


def probe(path: Path, *, archive: str | None, max_extracted_bytes: int, memory_mb: int, seconds: float,
          episodes: list[int] | None, step_range: list[int | None] | None, instruction: str | None,
          field: str) -> dict[str, Any]:
    """The probe's answer (ok: path, format, total, cameras); 422 naming `field` when it refuses or dies."""
    req = {"path": str(path), "uploaded": field == "file", "archive": archive,
           "max_extracted_bytes": max_extracted_bytes, "episodes": episodes, "step_range": step_range,
           "instruction": instruction, "memory_mb": memory_mb, "cpu_seconds": seconds}
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=probe_mod.child, args=(child, req), daemon=True)
    proc.start()
    child.close()
    try:
        answer = parent.recv() if parent.poll(seconds + WALL_GRACE_S) else None
    except EOFError:  # the child died before answering (rlimit signal, crash)
        answer = None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if answer is None:
        log.warning("dataset probe gave no answer (exit %s) for %s", proc.exitcode, path)
        raise ApiError(422, "invalid_dataset", f"the dataset could not be read within {seconds:g} s and "
                       f"{memory_mb} MB", field=field)
    log.info("dataset probe", extra={"ok": answer["ok"], "maxrss_kb": answer.get("maxrss_kb")})
    if not answer["ok"]:
        raise ApiError(422, "invalid_dataset", answer["message"],
                       field=field if answer["field"] in ("file", "dataset") else answer["field"])
    return answer
