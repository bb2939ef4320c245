"""Children that die with their parent: `Popen(..., preexec_fn=lifeline(signal.SIGTERM))`.

A process started in its own session (so a signal can reach its whole group) is not stopped when its parent
is SIGKILLed: a supervisor killed by the OOM killer, or a test run cut off mid-test, would leave a worker
consuming queues that nobody manages. Linux's PR_SET_PDEATHSIG has the kernel send a signal to the child
when the thread that started it exits. Elsewhere it is a no-op. Start such children from a long-lived
thread (the main one): the signal fires when that thread ends, not only when the process does.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def lifeline(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A preexec_fn that arms the death signal in the child, or None where the platform has none."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm
