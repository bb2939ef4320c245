"""The layout's rules, read from the code with `ast` (function-local imports included):

    ops -> web -> workers -> safety, one way;
    web imports only workers.{settings, logs, gc_freeze, tasks, store, wire} (and the pure dataset library
        workers.replays, which validates uploads before admission);
    stages import gpu, policies, store, wire, replays and safety; nothing in workers imports stages but tasks;
    policies, replays and safety import nothing above themselves; tasks is a leaf nothing in workers imports;
    no import cycles; every module under 300 lines; every task has an explicit name and time limits.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("web", "workers", "safety", "ops")
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module `name` imports, anywhere in the file (function bodies included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _under(mod: str, *prefixes: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


WEB_MAY_USE = ("workers.settings", "workers.logs", "workers.gc_freeze", "workers.tasks", "workers.store",
               "workers.wire", "workers.replays")
LEAVES = {"workers.policies": ("workers.policies",), "workers.replays": ("workers.replays",), "safety": ("safety",)}


def _violation(src: str, dst: str) -> str | None:
    if _under(src, "safety") and not _under(dst, "safety"):
        return "safety imports nothing above it"
    for leaf, allowed in LEAVES.items():
        if _under(src, leaf) and _under(dst, "workers", "web", "ops") and not _under(dst, *allowed):
            return f"{leaf} imports nothing above it"
    if _under(src, "workers") and _under(dst, "web", "ops"):
        return "workers never import web or ops"
    if _under(src, "web") and _under(dst, "ops"):
        return "web never imports ops"
    if _under(src, "web") and _under(dst, "workers") and not _under(dst, *WEB_MAY_USE):
        return f"web imports only {', '.join(WEB_MAY_USE)}"
    if _under(src, "workers") and dst == "workers.tasks":
        return "workers.tasks is a leaf: nothing in workers imports it"
    if _under(dst, "workers.stages") and _under(src, "workers") and not _under(src, "workers.stages", "workers.tasks"):
        return "only tasks (and stages themselves) import stages"
    shared_with_web = ("workers.store", "workers.wire")
    if _under(src, *shared_with_web) and _under(dst, "workers.gpu", "workers.stages", "workers.policies"):
        return "store and wire are shared with the web: no torch, no GPU code"
    return None


def test_imports_follow_the_layout_rules() -> None:
    bad = [f"{src} -> {dst}: {why}" for src, dsts in GRAPH.items() for dst in sorted(dsts)
           if (why := _violation(src, dst))]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if _under(node, nxt):  # a module importing its own package's __init__ is not a cycle of ours
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines"


def test_every_task_has_a_name_and_time_limits() -> None:
    from celery import Task

    from workers import tasks

    found = [t for t in vars(tasks).values() if isinstance(t, Task)]
    assert {t.name for t in found} == {"vla.infer", "vla.safety", "vla.replay"}
    for task in found:
        assert task.soft_time_limit and task.time_limit and task.soft_time_limit < task.time_limit, task.name


def test_the_rule_checker_catches_a_broken_rule() -> None:
    assert _violation("web.services.submit", "workers.gpu.decode")
    assert _violation("workers.stages.replay", "workers.tasks")
    assert _violation("safety.shield", "workers.settings")
    assert _violation("workers.policies.pi0", "workers.gpu.batcher")
    assert _violation("web.app", "workers.store.models") is None
