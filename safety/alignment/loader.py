"""Discovery of alignment checks: the built-in classifier, an entry-point group and "pkg.module:Class" paths.

Any failure to load raises AlignmentCheckLoadError: a configured check that silently went missing would make
the stage look healthy while checking less (fail closed at worker start instead).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from safety.alignment.base import AlignmentCheck
from safety.errors import AlignmentCheckLoadError

ENTRY_POINT_GROUP = "vla_safety.alignment_checks"


def _instantiate(obj: Any, where: str, threshold: float | None) -> AlignmentCheck:
    """Accept a subclass (called with no arguments), a factory returning an instance, or an instance."""
    try:
        check = obj() if callable(obj) and not isinstance(obj, AlignmentCheck) else obj
    except Exception as exc:  # noqa: BLE001 - a broken plugin constructor is a load error, whatever it raised
        raise AlignmentCheckLoadError(where, f"constructing {obj!r} failed: {exc}") from exc
    if not isinstance(check, AlignmentCheck):
        raise AlignmentCheckLoadError(where, f"{obj!r} did not produce an AlignmentCheck")
    if threshold is not None:
        check.threshold = threshold
    return check


def import_check(path: str, threshold: float | None = None) -> AlignmentCheck:
    """Load "package.module:Attribute"."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise AlignmentCheckLoadError("import_paths", f"{path!r} is not of the form 'package.module:Class'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AlignmentCheckLoadError("import_paths", f"cannot import {path!r}: {exc}") from exc
    return _instantiate(obj, "import_paths", threshold)


def entry_point_checks(threshold: float | None = None) -> list[AlignmentCheck]:
    checks = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - importing third-party code can raise anything
            raise AlignmentCheckLoadError(f"entry_point:{ep.name}", f"cannot load {ep.value!r}: {exc}") from exc
        checks.append(_instantiate(obj, f"entry_point:{ep.name}", threshold))
    return checks


def load_alignment_checks(enabled: bool, path: str | None, threshold: float | None,
                          import_paths: list[str] | None = None) -> list[AlignmentCheck]:
    """All alignment checks for a worker: [] when disabled; else the classifier at `path` (if given), every
    entry point of the group, then every import path. `threshold` (SAFETY_CLASSIFIER_THRESHOLD) sets each
    check's default threshold; a request's safety_threshold overrides it per evaluation."""
    if not enabled:
        return []
    checks: list[AlignmentCheck] = []
    if path:
        from safety.alignment.classifier import ActionClassifierCheck  # lazy: pulls in torch

        checks.append(ActionClassifierCheck.from_path(path, threshold))
    checks += entry_point_checks(threshold)
    checks += [import_check(p, threshold) for p in import_paths or []]
    names = [c.name for c in checks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AlignmentCheckLoadError("import_paths", f"duplicate alignment check names {dupes}")
    return checks
