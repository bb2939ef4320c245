"""Flower, with its /metrics and /healthcheck behind the same basic auth as every other page.

Flower 2.2 serves those two without authentication (they are plain handlers, not `web.authenticated`), and
/metrics names every worker, host and pid. Wrapping their `get` makes Flower's own credential check run
first: a missing or wrong Authorization header is a 401 like the dashboard's. Run by ops/flower.py, which
also keeps Flower's metrics out of the web's prometheus multiprocess directory.
"""
from __future__ import annotations

import sys

import tornado.web
from flower.views import monitor


def protect() -> None:
    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "_vlaapi_protected", False):
            handler.get = tornado.web.authenticated(handler.get)
            handler.get._vlaapi_protected = True


def main() -> None:
    protect()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
