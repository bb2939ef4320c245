"""`vlaapi replay ...`: submit a replay, follow it with a progress bar, fetch its results and plot.

A client of the HTTP API, not of the database: it works from any machine that can reach the service. Where:
--api-url / VLA_API_URL, else the web of the `make run` stack recorded in .data/stack.json, else
http://127.0.0.1:8000. Who: --api-key / VLA_API_KEY, else (under `make run`, development only) the demo key
that `make run` printed and recorded in the same owner-only file.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any

import click
import requests

from ops import stack

TERMINAL = ("succeeded", "failed", "canceled")
DEFAULT_URL = "http://127.0.0.1:8000"
NO_KEY = ("no API key: pass --api-key or set VLA_API_KEY. Make one with `vlaapi keys create --customer NAME` "
          "(add --create-customer for a new customer); under `make run` the demo key is used by itself.")


def running_stack() -> tuple[str | None, str | None]:
    """The web URL and the demo key `make run` recorded, when a stack of this checkout was started."""
    state = stack.read_state() or {}
    web = state.get("web")
    if web:  # a wildcard bind is reached on loopback
        web = web.replace("//0.0.0.0:", "//127.0.0.1:")
    return web, state.get("demo_key")


class Api:
    def __init__(self, base: str, key: str | None):
        self.base = base.rstrip("/")
        self.key = key
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        if not self.key:  # checked here, not in the group, so `--help` of every subcommand still works
            raise click.UsageError(NO_KEY)
        try:
            resp = self.session.request(method, self.base + path, timeout=kw.pop("timeout", 60), **kw)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.base}: {exc}") from None
        if resp.status_code >= 400:
            raise click.ClickException(_problem(resp))
        return resp


def _problem(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    field = f" ({doc['field']})" if doc.get("field") else ""
    return f"HTTP {resp.status_code} {doc.get('title', '')}: {doc.get('detail', '')}{field}"


@click.group()
@click.option("--api-url", envvar="VLA_API_URL", default=None,
              help=f"or VLA_API_URL; default: the running `make run` stack, else {DEFAULT_URL}")
@click.option("--api-key", envvar="VLA_API_KEY", default=None,
              help="or VLA_API_KEY; default under `make run`: its demo key")
@click.pass_context
def replay(ctx: click.Context, api_url: str | None, api_key: str | None) -> None:
    """Replay recorded trajectories through a policy."""
    web, demo = running_stack()
    ctx.obj = Api(api_url or web or DEFAULT_URL, api_key or demo)


@replay.command("submit")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--model", required=True)
@click.option("--server-path", help="a dataset in your folder on the server (REPLAY_DATA_ROOT/<customer>/), "
                                         "instead of uploading PATH")
@click.option("--episodes", help="comma-separated episode indices, e.g. 0,1")
@click.option("--instruction", help="override the recorded instruction")
@click.option("--robot-type", help="robot profile for the safety stage, e.g. widowx_250")
@click.option("--wait/--no-wait", default=False, help="follow progress until the replay ends")
@click.pass_obj
def submit(api: Api, path: Path | None, model: str, server_path: str | None, episodes: str | None,
           instruction: str | None, robot_type: str | None, wait: bool) -> None:
    """Submit PATH (a file or a directory, zipped on the fly) or --server-path; prints the replay id."""
    if (path is None) == (server_path is None):
        raise click.UsageError("give exactly one of PATH or --server-path")
    spec: dict[str, Any] = {"model": model}
    if episodes:
        spec["episodes"] = [int(e) for e in episodes.split(",") if e.strip()]
    if instruction:
        spec["instruction"] = instruction
    if robot_type:
        spec["robot_config"] = {"type": robot_type}
    if server_path is not None:
        body = api.call("POST", "/v1/replays", json={**spec, "dataset": {"path": server_path}}).json()
    else:
        with _upload_file(path) as (name, fh):
            body = api.call("POST", "/v1/replays", files={"file": (name, fh)},
                            data={"spec": json.dumps(spec)}, timeout=600).json()
    click.echo(body["id"])
    if wait:
        final = _follow(api, body["id"], body["progress"]["total_steps"])
        click.echo(f"{final['state']}: {final['progress']['done_steps']}/{final['progress']['total_steps']} steps",
                   err=True)
        if final["state"] != "succeeded":
            raise click.ClickException(json.dumps(final.get("error")))
        click.echo(json.dumps(final["summary"], indent=2))


class _upload_file:
    """The file to send: PATH itself, or a temporary zip of a directory (deleted afterwards)."""

    def __init__(self, path: Path):
        self.path = path
        self.fh: IO[bytes] | None = None

    def __enter__(self) -> tuple[str, IO[bytes]]:
        if self.path.is_file():
            self.fh = self.path.open("rb")
            return self.path.name, self.fh
        self.fh = tempfile.TemporaryFile()
        with zipfile.ZipFile(self.fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(self.path.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(self.path).as_posix())
        self.fh.seek(0)
        return f"{self.path.name or 'dataset'}.zip", self.fh

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


def _follow(api: Api, replay_id: str, total: int, poll_s: float = 0.5) -> dict[str, Any]:
    with click.progressbar(length=max(total, 1), label=f"replay {replay_id[:8]}", file=click.get_text_stream("stderr"),
                           show_eta=True, show_percent=True) as bar:
        shown = 0
        while True:
            body = api.call("GET", f"/v1/replays/{replay_id}").json()
            done = body["progress"]["done_steps"]
            bar.update(done - shown)
            shown = done
            if body["state"] in TERMINAL:
                return body
            time.sleep(poll_s)


@replay.command("results")
@click.argument("replay_id")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="default: standard output")
@click.pass_obj
def results(api: Api, replay_id: str, fmt: str, output: Path | None) -> None:
    """Download the per-step rows."""
    resp = api.call("GET", f"/v1/replays/{replay_id}/results", params={"format": fmt}, stream=True)
    _save(resp, output, binary=fmt == "parquet")


@replay.command("plot")
@click.argument("replay_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="default: replay-<id>.png")
@click.pass_obj
def plot(api: Api, replay_id: str, output: Path | None) -> None:
    """Download the plot of predicted against recorded actions."""
    resp = api.call("GET", f"/v1/replays/{replay_id}/plot.png", stream=True)
    _save(resp, output or Path(f"replay-{replay_id}.png"), binary=True)


def _save(resp: requests.Response, output: Path | None, *, binary: bool) -> None:
    if output is None:
        if binary and click.get_binary_stream("stdout").isatty():
            raise click.UsageError("refusing to write binary data to a terminal; use -o FILE")
        out: IO[bytes] = click.get_binary_stream("stdout")
        for chunk in resp.iter_content(1 << 16):
            out.write(chunk)
        out.flush()
        return
    tmp = output.with_name(output.name + ".part")
    with tmp.open("wb") as fh:
        for chunk in resp.iter_content(1 << 16):
            fh.write(chunk)
    os.replace(tmp, output)  # never leave a half-written file under the requested name
    click.echo(str(output), err=True)

