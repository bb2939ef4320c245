"""compose.yaml and the Dockerfile, read as files (no container engine needed): the profiles hold what the
deployment promises. The same files run for real under `make test-containers` (tests/containers)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from ops.container import PROCFILE_ROLES, procfile_command
from workers.policies.presets import TINY_NAMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def _in(profile: str) -> dict[str, dict]:
    return {n: s for n, s in SERVICES.items() if profile in s.get("profiles", [])}


def _role(svc: dict) -> str:
    return svc.get("command", ["web"])[0]


def test_dev_profile_is_the_whole_stack_on_one_host():
    dev = _in("dev")
    roles = sorted(_role(s) for n, s in dev.items() if n not in ("postgres", "redis"))
    assert roles == sorted(["migrate", "web", "openpi", "safety", "reaper", "flower", "worker", "worker"])
    models = dev["web-dev"]["environment"]["ENABLED_MODELS"].split(",")
    workers = sorted(s["command"][1] for s in dev.values() if _role(s) == "worker")
    assert workers == sorted(models) and set(models) <= set(TINY_NAMES)
    assert all(not s.get("deploy") for s in dev.values())  # CPU only
    assert dev["flower-dev"]["environment"]["FLOWER_BASIC_AUTH"]
    assert dev["migrate-dev"]["command"] == ["migrate", "--demo"] and dev["migrate-dev"]["restart"] == "no"
    for name, svc in dev.items():
        if name not in ("postgres", "redis", "migrate-dev"):
            assert svc["depends_on"]["migrate-dev"] == {"condition": "service_completed_successfully"}
            assert svc["image"].endswith(":dev") and svc["build"]["target"] == "dev"


def test_prod_profile_gpu_workers_one_gpu_each_sharing_a_queue():
    gpu = {n: s for n, s in _in("prod").items() if _role(s) == "worker"}
    assert len(gpu) >= 2 and len({tuple(s["command"]) for s in gpu.values()}) == 1  # one model, one queue
    seen = set()
    for svc in gpu.values():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        (gpu_id,) = device["device_ids"]
        assert svc["environment"]["NVIDIA_VISIBLE_DEVICES"] == gpu_id
        seen.add(gpu_id)
    assert len(seen) == len(gpu)  # no two workers on one GPU


def test_prod_profile_volumes_health_restart_logs_secrets():
    prod = _in("prod")
    assert {"migrate", "web", "openpi", "safety", "reaper", "flower"} <= {_role(s) for s in prod.values()}
    for name in ("postgres", "redis"):
        assert prod[name]["volumes"] and prod[name]["healthcheck"]["test"]
    for name, svc in prod.items():
        assert svc["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert svc["logging"]["options"]["max-size"], name
        if name not in ("postgres", "redis"):
            assert svc["env_file"][0]["path"] == ".env"
            assert "/models:ro" in " ".join(svc["volumes"])
            env = svc["environment"]
            assert env["VLAAPI_ENV"] == "production"
            assert "API_KEY_PEPPER" not in env and "FLOWER_BASIC_AUTH" not in env  # from .env only
    text = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"PEPPER\s*[:=]\s*\S", text)


def test_every_service_runs_a_role_of_the_image():
    for name, svc in SERVICES.items():
        if name in ("postgres", "redis"):
            continue
        assert _role(svc) in (*PROCFILE_ROLES, "worker", "migrate"), name
    procfile = (ROOT / "Procfile").read_text()
    for role in PROCFILE_ROLES:
        assert procfile_command(role, procfile)
    # Task events start off (celeryconfig: three publishes per task); Flower turns them on while it runs. `-E`
    # on a worker's line turned them on for good (the safety worker had it until issue 26).
    for line in procfile.splitlines():
        assert not re.search(r"\s(-E|--task-events)(\s|$)", line), line


def test_dockerfile_non_root_healthcheck_no_baked_secret():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    stages = re.split(r"^FROM ", text, flags=re.M)
    for stage in stages[1:]:
        users = re.findall(r"^USER (\S+)", stage, re.M)
        if "ENTRYPOINT" in stage or stage.startswith("prod AS dev"):
            assert users and users[-1] not in ("root", "0"), stage[:40]
    assert "HEALTHCHECK" in text and "ops.healthcheck" in text
    assert "--mount=type=secret,id=pip_ca" in text
    for line in re.findall(r"^(?:ENV|ARG) .*$", text, re.M):
        assert not re.search(r"PEPPER|PASSWORD|TOKEN|SECRET|PIP_CERT", line), line
