"""The prod profile cannot run here (no GPU, no NVIDIA toolkit): podman-compose resolves it, and what it
resolved keeps the GPU reservations, volumes, log rotation and restart policies (tests/ops/test_compose.py
reads the file itself)."""
from __future__ import annotations

import yaml

from tests.containers import stack


def test_podman_compose_resolves_the_prod_profile():
    out = stack.run([stack.COMPOSE, "-f", str(stack.ROOT / "compose.yaml"), "--profile", "prod", "config"],
                    cwd=stack.ROOT, env={**stack.env({}), "POSTGRES_PASSWORD": "x" * 16}).stdout
    services = yaml.safe_load(out)["services"]
    workers = [s for s in services.values() if s.get("command", [""])[0] == "worker"]
    assert len(workers) >= 2
    for w in workers:
        (device,) = w["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and len(device["device_ids"]) == 1
    assert all(s.get("restart") and s.get("logging") for s in services.values())
    assert "pgdata" in yaml.safe_load(out)["volumes"]
    assert not any(n.endswith("-dev") for n in services)  # the dev services stay out of prod
