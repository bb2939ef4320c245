"""workers/gc_freeze.py: what a process built before serving leaves the collector's walks, what it builds later
does not (issue 26)."""
from __future__ import annotations

import gc
import subprocess
import sys


def test_freeze_moves_start_up_objects_out_of_the_collectors_walks_and_later_garbage_is_still_collected():
    # In a child process: a freeze is for the life of the process, and this one runs the rest of the suite.
    code = """
import gc, weakref
from workers import gc_freeze
built = [[i] for i in range(20_000)]  # lists are always tracked (a dict of ints is not)
frozen = gc_freeze.freeze("test")
assert frozen >= 20_000, frozen
assert gc.get_freeze_count() == frozen
assert sum(len(gc.get_objects(g)) for g in range(3)) < frozen / 2

class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the freeze
alive = weakref.ref(a)
del a, b
gc.collect()
assert alive() is None
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert gc.get_freeze_count() == 0 or gc.isenabled()  # this process is untouched by the child
