"""`vlaapi dev run`: the whole stack on one machine, from a fresh clone, in one command.

Steps: PostgreSQL and Redis (given, or embedded real servers under ./.data), migrations, tiny checkpoints,
a demo customer and key with a ready curl line, then the Procfile (web, a GPU worker per enabled model,
the safety worker, Flower) under honcho.
"""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import click

from ops import procfile, stack

ROOT = Path(__file__).resolve().parent.parent


def prepare_environment() -> dict[str, str]:
    """Start or find the services, migrate, and return the environment every process should see."""
    db_server = stack.ensure_postgres()
    db_url = db_server if os.environ.get("DATABASE_URL") else stack.ensure_database(db_server, "vlaapi")
    try:
        redis_url = stack.ensure_redis()
    except stack.StackConflict as exc:  # a stranger on the embedded port: say what to do, no traceback
        raise click.ClickException(str(exc)) from None
    os.environ.update(DATABASE_URL=db_url, REDIS_URL=redis_url)
    from workers.settings import reload_settings
    from workers.store.migrate import upgrade

    reload_settings()

    upgrade(db_url)
    # make run is development mode: the web accepts the public default API_KEY_PEPPER (with a warning).
    os.environ["VLAAPI_ENV"] = "development"
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "VLAAPI_ENV": "development"}


def ensure_tiny_models() -> None:
    from workers.policies.presets import TINY_NAMES, build_tiny_checkpoints
    from workers.policies.registry import parse_enabled_models
    from workers.settings import get_settings

    settings = get_settings()
    wanted = [n for n, p in parse_enabled_models(settings.enabled_models).items() if n in TINY_NAMES and p is None]
    missing = [n for n in wanted if not (settings.model_dir / n / "config.json").exists()]
    if missing:
        build_tiny_checkpoints(settings.model_dir, missing)
        click.echo(f"built tiny checkpoints {missing} in {settings.model_dir}")


def demo_key() -> str:
    from web.accounts import service
    from workers.settings import get_settings
    from workers.store.db import session_scope

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        try:
            customer = service.get_customer(s, "demo")
        except service.AccountError:
            customer = service.create_customer(s, "demo", "pro")
        _, plaintext = service.create_key(s, customer, settings.api_key_pepper, name="make-run")
    return plaintext


def write_demo_request(model: str) -> Path:
    """A real PNG of a small synthetic scene, wrapped in a request body for the printed curl line."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    body = {"model": model, "image": base64.b64encode(buf.getvalue()).decode(), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"},
            "robot_state": {"ee_position": [0.3, 0.0, 0.15]}, "safety": {"mode": "clamp"}}
    path = stack.DATA / "demo_request.json"
    path.write_text(json.dumps(body))
    return path


@click.group()
def dev() -> None:
    """Development stack."""


@dev.command("services")
def services() -> None:
    """Start (or find) PostgreSQL and Redis, migrate, and print their URLs as shell exports."""
    env = prepare_environment()
    stack.write_state(stack.DATA, env)  # so `vlaapi customers ...` in another shell finds them
    for k, v in env.items():
        click.echo(f"export {k}={v}")


@dev.command("stop")
def stop_services() -> None:
    """Stop the embedded PostgreSQL and Redis under ./.data (servers named by URLs are left alone)."""
    click.echo(f"stopped: {', '.join(stack.stop_embedded()) or 'nothing was running'}")


@dev.command("run")
@click.option("--no-procs", is_flag=True, help="set everything up, print the key, but start no processes")
def run(no_procs: bool) -> None:
    """Set up everything and run the Procfile."""
    stack.DATA.mkdir(parents=True, exist_ok=True)
    env = prepare_environment()
    ensure_tiny_models()
    from workers.settings import get_settings

    settings = get_settings()
    models = [n.split("=")[0].strip() for n in settings.enabled_models.split(",") if n.strip()]
    key = demo_key()
    request = write_demo_request(models[0])
    flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
    bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
    openpi = f"ws://{os.environ.get('OPENPI_HOST', '127.0.0.1')}:{os.environ.get('OPENPI_PORT', '8765')}/v1/openpi"
    stack.write_state(stack.DATA, env, web=f"http://{bind}", openpi=openpi)  # read by the CLI in other shells
    click.echo(f"\nDemo API key (customer 'demo', tier pro): {key}\n")
    click.echo(f"curl -s -X POST http://{bind}/v1/inference -H 'Authorization: Bearer {key}' "
               f"-H 'Content-Type: application/json' -d @{os.path.relpath(request, ROOT)}\n")
    click.echo(f"Docs: http://{bind}/docs   openpi: {openpi}/<model>   Flower: http://127.0.0.1:5555 ({flower_auth})")
    click.echo("Other terminals: `vlaapi customers list`, `vlaapi keys create --customer demo` find this stack.\n")
    if no_procs:
        return
    prom = stack.DATA / "prometheus"
    prom.mkdir(exist_ok=True)
    for f in prom.glob("*.db"):
        f.unlink()
    run_file = stack.DATA / "Procfile.run"
    run_file.write_text(procfile.expand((ROOT / "Procfile").read_text(), models))
    # The Procfile's commands (gunicorn, celery) come from this virtual environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(FLOWER_BASIC_AUTH=flower_auth, PROMETHEUS_MULTIPROC_DIR=str(prom), PYTHONUNBUFFERED="1", PATH=path)
    honcho = [sys.executable, "-m", "honcho", "-f", str(run_file), "-d", str(ROOT), "start"]
    proc = subprocess.Popen(honcho, env={**os.environ, **env})
    # A SIGTERM to `vlaapi dev run` stops the stack (honcho forwards it to every supervised process), rather
    # than leaving honcho and its processes behind.
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    raise SystemExit(proc.wait())
