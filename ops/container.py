"""The image's entry point: `python -m ops.container ROLE [ARGS]` becomes one process of the stack.

Roles are the Procfile's lines (web, openpi, safety, reaper, flower), run by their own command so the image
and `make run` cannot drift apart; `worker MODEL` is a GPU worker for one model (the line `make run` writes
per enabled model); `migrate` upgrades the database once and exits (with `--demo`, in development, it also
makes the demo customer's key and prints it with a curl line, as `make run` does). The role is written to
ROLE_FILE so the image's HEALTHCHECK (ops/healthcheck.py) knows what to check. No supervisor here: the
container runtime restarts a process that exits (compose `restart:`).
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from ops import procfile

ROOT = Path(__file__).resolve().parent.parent
ROLE_FILE = Path(os.environ.get("VLAAPI_ROLE_FILE", "/tmp/vlaapi-role"))
PROCFILE_ROLES = ("web", "openpi", "safety", "reaper", "flower")


def procfile_command(role: str, procfile_text: str) -> str:
    """The command of the Procfile line named `role` (comments and blank lines skipped)."""
    for line in procfile_text.splitlines():
        name, sep, cmd = line.partition(":")
        if sep and not line.startswith("#") and name.strip() == role:
            return cmd.strip()
    raise KeyError(f"no Procfile line named {role!r}")


def _exec_shell(cmd: str) -> None:
    # The Procfile's ${VAR:-default} expansions are shell syntax: `exec` keeps the process PID 1's child.
    os.execvp("sh", ["sh", "-c", f"exec {cmd}"])


def _migrate(demo: bool) -> None:
    from sqlalchemy.exc import OperationalError

    from workers.settings import get_settings
    from workers.store.migrate import upgrade

    # PostgreSQL may still be starting: compose's health condition is not honoured by every engine.
    deadline = time.monotonic() + float(os.environ.get("MIGRATE_WAIT_S", "90"))
    while True:
        try:
            upgrade(get_settings().database_url)
            break
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            print(f"migrations: database not reachable yet ({type(exc.orig).__name__}); retrying", flush=True)
            time.sleep(2)
    print("migrations: database is at head", flush=True)
    if demo:
        from ops.cli_dev import demo_banner

        print(demo_banner(os.environ.get("DEMO_WEB_URL", "http://127.0.0.1:8000")), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv) or ["web"]
    role, rest = args[0], args[1:]
    if role == "migrate":
        _migrate("--demo" in rest)
        return
    if role == "worker":
        model = rest[0] if rest else os.environ.get("WORKER_MODEL", "")
        if not model:
            raise SystemExit("container: `worker` needs a model name (argument or WORKER_MODEL)")
        os.environ["WORKER_MODEL"] = model
        ROLE_FILE.write_text(f"worker {model}\n")
        concurrency = int(os.environ.get("WORKER_CONCURRENCY", "16"))
        argv_ = procfile.gpu_worker_argv(model, concurrency)
        os.execvp(argv_[0], argv_)
    if role in PROCFILE_ROLES:
        ROLE_FILE.write_text(f"{role}\n")
        _prepare_prometheus_dir()  # any process that imports the web's metrics needs the directory
        _exec_shell(procfile_command(role, (ROOT / "Procfile").read_text()))
    if role in ("vlaapi", "sh", "bash", "python"):  # operator commands: `... run --rm web vlaapi customers list`
        os.execvp(role, [role, *rest])
    raise SystemExit(f"container: unknown role {role!r}; one of {', '.join(PROCFILE_ROLES)}, worker MODEL, "
                     f"migrate [--demo], vlaapi ...  ({shlex.join(args)})")


def _prepare_prometheus_dir() -> None:
    """gunicorn's processes share metrics through files; stale ones from a previous start would double-count."""
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d:
        path = Path(d)
        path.mkdir(parents=True, exist_ok=True)
        for f in path.glob("*.db"):
            f.unlink()


if __name__ == "__main__":
    main()
