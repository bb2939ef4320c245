"""flask-smorest subclassed once: every HTTP error becomes a problem document, documented as one."""
from __future__ import annotations

import http

from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from flask_smorest.utils import prepare_response
from marshmallow import INCLUDE, Schema, fields

from web import msgpack_body
from web.api.spec import ConformancePlugin
from web.errors import from_http_exception

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemSchema(Schema):
    """RFC 9457 problem document; some carry more members (usage, valid, job_id, state)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, metadata={"description": "a URL naming the problem"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True, metadata={"description": "what went wrong, in our words"})
    request_id = fields.String(required=True, allow_none=True)
    field = fields.String(metadata={"description": "the request field at fault"})
    errors = fields.Dict(keys=fields.String(), metadata={"description": "messages per field"})


class Api(_Api):
    """flask-smorest's Api, answering every HTTP error with a problem document."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app=None, **kwargs):
        kwargs.setdefault("spec_kwargs", {}).setdefault("extra_plugins", [ConformancePlugin()])
        super().__init__(app, **kwargs)

    def handle_http_exception(self, error):
        return from_http_exception(error)

    def _register_responses(self):
        """flask-smorest's error responses, as application/problem+json (what they are served as)."""
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MEDIA_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "A problem document", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MEDIA_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


class Blueprint(_Blueprint):
    """flask-smorest's Blueprint, reading request bodies through the input guard (one parse, checked); a body
    at location msgpack_body.LOCATION may also be msgpack (documented as JSON; add its msgpack form with doc)."""

    ARGUMENTS_PARSER = msgpack_body.BodyParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {**_Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
                                             msgpack_body.LOCATION: "application/json"}
