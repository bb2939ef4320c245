"""Keep the cyclic garbage collector off what a long-running process built before it started serving (issue 26).

A process of ours holds a few hundred thousand objects made at start-up (Flask and flask-smorest, SQLAlchemy,
Celery and kombu, transformers and torch modules) that live as long as it does. Python's full collection
(generation 2) walks every one of them whenever enough young objects survive, and a request makes thousands of
them (a pi0 result alone is about a thousand floats and a hundred dicts). Measured under eight openpi clients
on the development VM (docs/benchmarks.md, issue 26): the openpi door, ~200,000 objects, ran a full collection
about every 6 s, each holding the GIL for ~126 ms (every request in the process waits it out); the GPU worker
(~530,000 objects) paid ~140 ms per full collection during start-up. `gc.freeze()` moves everything alive now
into a permanent generation that collections skip, so a full collection walks only what was made since.
Collected first, so no start-up garbage is kept forever.
"""
from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze(what: str) -> int:
    """Collect, then freeze every object alive now; returns how many are frozen. Called once a process has
    finished starting (imports, app, model): what it builds later is collected as usual."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen (%s)", count, what)
    return count
