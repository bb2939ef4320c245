"""`python -m web.compat.openpi [--host H] [--port P]`: the openpi websocket process (Procfile `openpi`)."""
from __future__ import annotations

import argparse
import asyncio
import os

from web.app import create_app
from web.compat.openpi.limits import Limits
from web.compat.openpi.server import OpenpiServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("OPENPI_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("OPENPI_PORT", "8765")))
    args = parser.parse_args()
    limits = Limits.from_env()
    app = create_app()  # configures logging, as for the web
    asyncio.run(OpenpiServer(app, limits).run(args.host, args.port))


if __name__ == "__main__":
    main()
