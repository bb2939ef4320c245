"""The Procfile's flower line: refuse to start without real credentials, then become Flower.

Flower's API can revoke tasks and shut workers down, and basic auth with an empty credential matches an
empty login, so an unset or malformed FLOWER_BASIC_AUTH is a start-up error, not an open dashboard.

Flower keeps its metrics to itself: PROMETHEUS_MULTIPROC_DIR is dropped from its environment, so its
flower_* series (worker names, host, pids) are served only by its own /metrics, behind its credentials
(ops/flower_serve.py), never through the web's public /metrics, which reads that directory.
"""
from __future__ import annotations

import os
import sys

MIN_PASSWORD = 12


def problems(value: str) -> list[str]:
    """What is wrong with FLOWER_BASIC_AUTH ("user:password[,user:password...]"); empty when it is usable."""
    if not value.strip():
        return ["FLOWER_BASIC_AUTH is not set"]
    out = []
    for i, cred in enumerate(value.split(","), 1):
        user, sep, password = cred.partition(":")
        if not sep or not user.strip():
            out.append(f"credential {i} is not user:password")
        elif len(password) < MIN_PASSWORD:
            out.append(f"credential {i}'s password is shorter than {MIN_PASSWORD} characters")
    return out


def main() -> None:
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    found = problems(auth)
    if found:
        sys.stderr.write(f"flower: refusing to start: {'; '.join(found)}. Set FLOWER_BASIC_AUTH=user:password "
                         f"(a password of {MIN_PASSWORD}+ characters), e.g. admin:$(python -c 'import secrets; "
                         "print(secrets.token_urlsafe(16))')\n")
        raise SystemExit(2)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # execv passes os.environ on
    argv = [sys.executable, "-m", "ops.flower_serve", "-A", "workers.celery_app", "flower",
            f"--port={os.environ.get('FLOWER_PORT', '5555')}",
            f"--address={os.environ.get('FLOWER_ADDRESS', '127.0.0.1')}", f"--basic-auth={auth}"]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
