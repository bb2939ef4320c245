"""Warm restarts for a supervised GPU worker: import torch and the model backends once, fork each worker.

A GPU worker's boot on the 2-core dev VM is mostly imports: torch (~2 CPU-s), transformers, timm and the
torchvision/dynamo modules they pull in (~3 CPU-s), all before its model loads (tiny: 0.3 s, plus its 0.9 s
self-check). On a busy machine that was 30 s of a 36-43 s kill-to-first-answer (docs/benchmarks.md, issue
22). So the supervisor of a GPU worker (ops/supervise.py; WORKER_MODEL set and the command `python -m celery
...`) imports those modules itself, once, and starts each worker by fork() from that warm process, running the
command's module in the child as `python -m` would (gunicorn's `--preload`, Celery prefork's parent do the
same). Nothing in the parent touches a device, loads weights or starts a Python thread (importing torch
starts one native thread of its own, as in every process that forks DataLoader workers after importing torch),
so the fork is safe for CUDA (no context exists before the child's batcher thread makes one) and the child
loads its model itself, as a cold worker does. `SUPERVISE_PRELOAD=0` turns it off; a preload that fails falls
back to a plain start. The worker's /proc cmdline is its supervisor's (no exec); its pid and logs are its own.
"""
from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from ops.lifeline import lifeline


def preload_module(argv: list[str], say: Callable[[str], None]) -> tuple[str, list[str]] | None:
    """(module, its args) to run in forked children when `argv` is a GPU worker's `[env VAR=VALUE...] python
    -m celery ...` and the preload succeeded; None to start `argv` plainly. The `env` prefix (the Procfile's
    way to name the model) is applied to this process, which runs nothing else."""
    assignments, argv = _split_env(argv)
    if os.environ.get("SUPERVISE_PRELOAD", "1") == "0":
        return None
    if len(argv) < 3 or argv[1:3] != ["-m", "celery"] or not _same_python(argv[0]):
        return None
    if not {**os.environ, **assignments}.get("WORKER_MODEL"):
        return None
    os.environ.update(assignments)
    try:
        from workers.gpu.runtime import preload

        preload()
    except Exception as exc:  # a broken install shows in the worker's own start, with its own traceback
        say(f"preload failed ({type(exc).__name__}: {exc}); starting workers plainly")
        return None
    if threading.active_count() > 1:  # a thread would not survive fork(): its locks could stay held
        say("preload started a thread; starting workers plainly")
        return None
    return argv[2], argv[3:]


def _split_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`env A=1 B=2 cmd...` -> ({A: 1, B: 2}, [cmd...]); anything else unchanged."""
    if argv[:1] != ["env"]:
        return {}, argv
    i, out = 1, {}
    while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
        key, _, value = argv[i].partition("=")
        out[key] = value
        i += 1
    return out, argv[i:]


def _same_python(exe: str) -> bool:
    import shutil

    found = shutil.which(exe)
    return found is not None and os.path.realpath(found) == os.path.realpath(sys.executable)


def fork_module(module: str, args: list[str]) -> int:
    """Fork a child that runs `python -m module args` in this (preloaded) interpreter; its pid. The child has
    its own session (signals reach its group) and dies with this process, like a supervised Popen."""
    arm = lifeline(signal.SIGTERM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        if arm is not None:
            arm()
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        # The child's own exit, as the interpreter's would be (atexit: logging's flush); never back into
        # the supervisor's loop.
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return 0  # not reached


def wait(pid: int) -> int:
    """The child's exit code as Popen.wait gives it (negative: the signal that killed it)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
