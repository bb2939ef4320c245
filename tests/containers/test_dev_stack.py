"""The dev profile, up for real under podman: inference, the printed curl line, a replay through the CLI, the
openpi client, every service's own health check, and the image itself (user, secrets, size)."""
from __future__ import annotations

import base64
import io
import json
import re
import subprocess

import numpy as np
import requests
from click.testing import CliRunner
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from PIL import Image

from ops.cli import main
from tests.containers import stack
from tests.containers.conftest import SERVICES
from tests.integration.replay_helpers import write_dataset


def _png(size: int = 64) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_inference(dev):
    body = {"model": "openvla-tiny", "image": _png(), "instruction": "pick up the red block",
            "robot_config": {"type": "widowx_250"}}
    resp = requests.post(dev.url + "/v1/inference", json=body, headers=dev.headers, timeout=120)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["action"]["values"]) == 7


def test_printed_curl_line_works(dev):
    banner = stack.logs(stack.container_of("migrate-dev"))
    line = next(ln for ln in banner.splitlines() if ln.startswith("curl -s -X POST"))
    line = re.sub(r"http://127\.0\.0\.1:\d+", dev.url, line)  # the banner names the port compose was given
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=120, check=True).stdout
    assert len(json.loads(out)["action"]["values"]) == 7, out


def test_replay_through_the_cli(dev, tmp_path):
    path, steps = write_dataset("npz", tmp_path, episodes=1, steps=4)
    result = CliRunner().invoke(main, ["replay", "--api-url", dev.url, "--api-key", dev.key, "submit", str(path),
                                       "--model", "openvla-tiny", "--wait"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"succeeded: {steps}/{steps} steps" in result.output


def test_openpi_client(dev):
    img = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    obs = {"observation/image": img, "observation/wrist_image": img, "observation/state": np.zeros(8),
           "prompt": "put the bowl on the plate"}
    policy = WebsocketClientPolicy(host=f"{dev.ws}/pi0-tiny", api_key=dev.key)
    assert policy.infer(obs)["actions"].shape == (50, 7)


def test_every_service_healthy(dev):
    for service in SERVICES:
        stack.wait_healthy(stack.container_of(service), timeout=60)
    migrate = stack.podman("inspect", stack.container_of("migrate-dev"), "--format", "{{.State.ExitCode}}")
    assert migrate.stdout.strip() == "0"


def test_processes_run_as_non_root(dev):
    for service in SERVICES[2:]:
        uids = stack.podman("exec", stack.container_of(service), "sh", "-c",
                            "for p in /proc/[0-9]*; do awk '/^Uid:/{print $2}' $p/status; done").stdout.split()
        assert uids and "0" not in uids, (service, uids)


def _certs(text: str) -> dict[str, str]:
    """Certificates by their base64 body without whitespace (bundles wrap and annotate them differently)."""
    out = {}
    for c in text.split("-----BEGIN CERTIFICATE-----")[1:]:
        body = c.split("-----END")[0].strip()
        out["".join(body.split())] = body
    return out


def _proxy_ca_lines() -> list[str]:
    """A line of each certificate the build's CA bundle has beyond the public ones in the image's own certifi:
    the TLS proxy's, which the build used as a secret and which must not be in the image."""
    import os

    host = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    if not os.path.exists(host):
        return []
    public = _certs(stack.podman("run", "--rm", "--entrypoint", "sh", f"{stack.IMAGE}:latest", "-c",
                                 "cat /opt/venv/lib/python3.11/site-packages/certifi/cacert.pem").stdout)
    extra = [body for key, body in _certs(open(host).read()).items() if key not in public]
    return [c.splitlines()[-2] for c in extra if len(c.splitlines()) > 6]  # in the signature: unique


def test_no_secret_in_any_layer():
    for tag in ("dev", "latest"):
        history = stack.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", f"{stack.IMAGE}:{tag}").stdout
        for needle in ("BEGIN CERTIFICATE", "PEPPER=", "PASSWORD=", "FLOWER_BASIC_AUTH=", "pip_ca,src"):
            assert needle not in history, (tag, needle)
    # The files: not the build's CA bundle (the proxy's certificates), no .env, no private key.
    patterns = " ".join(f"-e '{line}'" for line in _proxy_ca_lines()) + " -e 'BEGIN [A-Z ]*PRIVATE KEY-----$'"
    found = stack.podman("run", "--rm", "--entrypoint", "sh", f"{stack.IMAGE}:latest", "-c",
                         "grep -rlsI --exclude-dir=proc --exclude-dir=sys --exclude-dir=tests --exclude-dir=test "
                         f"{patterns} / ; "
                         "find / -xdev \\( -name .env -o -name pip_ca \\) -print",
                         check=False, timeout=900).stdout.split()
    assert found == [], found


def test_image_size_within_python_env_plus_300mb():
    out = stack.podman("run", "--rm", "--entrypoint", "sh", f"{stack.IMAGE}:latest", "-c",
                       "du -sb /opt/venv | cut -f1").stdout
    venv = int(out.strip())
    size = json.loads(stack.podman("image", "inspect", f"{stack.IMAGE}:latest").stdout)[0]["Size"]
    print(f"\nimage {size / 1e9:.2f} GB, its Python environment {venv / 1e9:.2f} GB")
    assert size <= venv + 300e6
