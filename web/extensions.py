"""flask-smorest subclassed once: every HTTP error becomes a problem document."""
from __future__ import annotations

from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint

from web.errors import from_http_exception
from web.input_guard import GuardedParser


class Api(_Api):
    """flask-smorest's Api, answering every HTTP error with a problem document."""

    def handle_http_exception(self, error):
        return from_http_exception(error)


class Blueprint(_Blueprint):
    """flask-smorest's Blueprint, reading request bodies through the input guard (one parse, checked)."""

    ARGUMENTS_PARSER = GuardedParser()

