"""A database session per request, closed at teardown."""
from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from workers.store.db import session_factory


def session() -> Session:
    if "db" not in g:
        g.db = session_factory(current_app.config["SETTINGS"].database_url)()
    return g.db


def _close(exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        if exc is not None:
            db.rollback()
        db.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close)
