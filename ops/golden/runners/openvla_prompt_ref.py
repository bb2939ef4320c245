"""Runs INSIDE the openvla env: upstream's `get_openvla_prompt` and `SYSTEM_PROMPT`, compiled from
vla-scripts/deploy.py as published (only those two: the module's server imports are not needed).
Usage: python openvla_prompt_ref.py DEPLOY.py OUT.json INSTRUCTION...
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Union


def main(deploy: str, out: str, *instructions: str) -> None:
    tree = ast.parse(open(deploy).read())
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == "get_openvla_prompt")
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "SYSTEM_PROMPT" for t in n.targets))]
    namespace = {"Union": Union, "Path": Path}
    exec(compile(ast.Module(body=keep, type_ignores=[]), deploy, "exec"), namespace)  # noqa: S102 - upstream code
    get = namespace["get_openvla_prompt"]
    paths = {"pure": "openvla/openvla-7b", "v01": "openvla/openvla-v01-7b"}
    Path(out).write_text(json.dumps({k: [get(s, p) for s in instructions] for k, p in paths.items()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
