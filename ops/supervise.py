"""Keep one process running: `python -m ops.supervise -- CMD ARGS...` restarts CMD whenever it exits.

`make run` (`vlaapi dev run`) wraps every Procfile line in it (ops/procfile.py), because honcho stops the
whole stack when one process exits, and a worker's watchdog exits on purpose when it can no longer consume
(workers/liveness.py). The first restart comes after 0.25 s (a worker killed once should serve again within
seconds: issue 22); restarts back off, doubling up to 30 s, while the process keeps dying young, and reset once
it has lived a minute. SIGTERM or SIGINT goes to the child's process group; the supervisor waits for it to
drain and exits with its code, restarting nothing. A GPU worker's supervisor imports torch and the model
backends once and forks each worker from itself, so a restart skips those imports (ops/warmstart.py). In
production use the platform's supervisor instead (systemd `Restart=always`, Kubernetes `restartPolicy:
Always`); see the README.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from ops import warmstart
from ops.lifeline import lifeline

MIN_BACKOFF_S, MAX_BACKOFF_S, HEALTHY_AFTER_S = 0.25, 30.0, 60.0


def _say(msg: str) -> None:
    # Timestamped like workers/logs.py, so a restart lines up with the child's own log lines.
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    print(f"{ts} supervise: {msg}", file=sys.stderr, flush=True)


def supervise(argv: list[str], *, max_restarts: int | None = None) -> int:
    stopping = threading.Event()
    child: list[int] = []  # the running child's pid

    def forward(signum, _frame) -> None:
        stopping.set()
        if child:
            try:
                os.killpg(child[0], signum)
            except ProcessLookupError:  # exited already, or forked and not yet in its own group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child[0], signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    warm = warmstart.preload_module(argv, _say)  # a GPU worker: import torch once, fork each start
    backoff, restarts = MIN_BACKOFF_S, 0
    while True:
        started = time.monotonic()
        code = _run(argv, warm, child)
        if stopping.is_set():
            return code
        lived = time.monotonic() - started
        if lived >= HEALTHY_AFTER_S:
            backoff = MIN_BACKOFF_S
        delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)  # the first restart waits MIN_BACKOFF_S
        restarts += 1
        if max_restarts is not None and restarts > max_restarts:
            _say(f"{argv[0]} exited with {code}; {max_restarts} restarts used, giving up")
            return code
        _say(f"{argv[0]} exited with {code} after {lived:.1f} s; restarting in {delay:.2f} s")
        if stopping.wait(delay):
            return code


def _run(argv: list[str], warm: tuple[str, list[str]] | None, child: list[int]) -> int:
    """Start the child once (forked from this warm process, or a plain Popen) and wait for its exit code."""
    if warm is not None:
        child[:] = [warmstart.fork_module(*warm)]
        code = warmstart.wait(child[0])
    else:
        # A killed supervisor takes its child with it (a drain, as on SIGTERM), so a restart never doubles it.
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=lifeline(signal.SIGTERM))
        child[:] = [proc.pid]
        code = proc.wait()
    child.clear()
    return code


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m ops.supervise -- CMD [ARGS...]")
    raise SystemExit(supervise(args))


if __name__ == "__main__":
    main()
