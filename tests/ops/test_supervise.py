"""ops/supervise.py with real processes: a child that exits is started again; SIGTERM reaches the child and
ends the supervisor without a restart; the Procfile `make run` writes wraps every line in it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ops import procfile

ROOT = Path(__file__).resolve().parents[2]


def test_restarts_a_child_that_exits_and_forwards_sigterm(tmp_path):
    runs = tmp_path / "runs"
    # Exits at once on its first two runs, then stays up until it is told to stop.
    child = ("import os, sys, time, pathlib, signal; p = pathlib.Path(sys.argv[1]); n = len(p.read_text()) "
             "if p.exists() else 0; p.write_text('x' * (n + 1)); "
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
             "sys.exit(3) if n < 2 else time.sleep(60)")
    sup = subprocess.Popen([sys.executable, "-m", "ops.supervise", "--", sys.executable, "-c", child, str(runs)],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 20
    while time.monotonic() < end and not (runs.exists() and len(runs.read_text()) >= 3):
        time.sleep(0.1)
    assert runs.exists() and len(runs.read_text()) == 3  # two restarts (0.25 s, then 0.5 s of back-off)
    time.sleep(0.5)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=10) == 7  # the child's own exit code, and no fourth run
    assert len(runs.read_text()) == 3
    assert sup.stderr.read().count("restarting in") == 2


def test_make_run_procfile_is_supervised():
    text = procfile.expand((ROOT / "Procfile").read_text(), ["openvla-tiny"])
    lines = [ln for ln in text.splitlines() if ln]
    assert {"web", "safety", "reaper", "flower", "gpu_openvla_tiny"} <= {ln.split(":", 1)[0] for ln in lines}
    assert all(ln.split(":", 1)[1].strip().startswith(procfile.SUPERVISE) for ln in lines)
