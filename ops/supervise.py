"""Keep one process running: `python -m ops.supervise -- CMD ARGS...` restarts CMD whenever it exits.

`make run` (`vlaapi dev run`) wraps every Procfile line in it (ops/procfile.py), because honcho stops the
whole stack when one process exits, and a worker's watchdog exits on purpose when it can no longer consume
(workers/liveness.py). The first restart comes after 0.25 s (a worker killed once should serve again within
seconds: issue 22); restarts back off, doubling up to 30 s, while the process keeps dying young, and reset once
it has lived a minute. SIGTERM or SIGINT goes to the child's process group; the supervisor waits for it to
drain and exits with its code, restarting nothing. In production use the platform's supervisor instead
(systemd `Restart=always`, Kubernetes `restartPolicy: Always`); see the README.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from ops.lifeline import lifeline

MIN_BACKOFF_S, MAX_BACKOFF_S, HEALTHY_AFTER_S = 0.25, 30.0, 60.0


def _say(msg: str) -> None:
    print(f"supervise: {msg}", file=sys.stderr, flush=True)


def supervise(argv: list[str], *, max_restarts: int | None = None) -> int:
    stopping = threading.Event()
    child: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        stopping.set()
        if child and child[0].poll() is None:
            os.killpg(child[0].pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    backoff, restarts = MIN_BACKOFF_S, 0
    while True:
        started = time.monotonic()
        # A killed supervisor takes its child with it (a drain, as on SIGTERM), so a restart never doubles it.
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=lifeline(signal.SIGTERM))
        child[:] = [proc]
        code = proc.wait()
        if stopping.is_set():
            return code
        lived = time.monotonic() - started
        backoff = MIN_BACKOFF_S if lived >= HEALTHY_AFTER_S else min(backoff * 2, MAX_BACKOFF_S)
        restarts += 1
        if max_restarts is not None and restarts > max_restarts:
            _say(f"{argv[0]} exited with {code}; {max_restarts} restarts used, giving up")
            return code
        _say(f"{argv[0]} exited with {code} after {lived:.1f} s; restarting in {backoff:.2f} s")
        if stopping.wait(backoff):
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
