"""The OpenAPI document as strict as the validation behind it (an apispec plugin), so that a schema-driven
client or fuzzer (schemathesis) generates only what the server accepts, and reads what it answers.

- Every plain string carries the input guard's pattern (no control characters but tab, LF, CR).
- Objects sized with marshmallow's Length say so with minProperties/maxProperties (apispec writes
  minLength, which JSON Schema ignores on objects).
- A schema class may add schema-level keywords (oneOf, ...) with an `OPENAPI_EXTRA` dict.
- /v1 operations and /act name the API key scheme; /health, /metrics and the document itself need none.
- A submission's 202 links its id to the operations that read, wait on and cancel it.
"""
from __future__ import annotations

from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

# The same set web.input_guard refuses, as an ECMA-262 / Python regular expression.
CONTROL_CLASS = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f"
NO_CONTROL = f"^[^{CONTROL_CLASS}]*$"
SECURITY_SCHEME = "ApiKey"

# operation (path, method) whose 202 response's `id` feeds the listed operations' path parameter.
_LINKS = {
    ("/v1/jobs", "post"): ("job_id", {"GetJob": ("/v1/jobs/{job_id}", "get"),
                                      "WaitJob": ("/v1/jobs/{job_id}/wait", "get"),
                                      "CancelJob": ("/v1/jobs/{job_id}", "delete")}),
    ("/v1/replays", "post"): ("replay_id", {"GetReplay": ("/v1/replays/{replay_id}", "get"),
                                            "CancelReplay": ("/v1/replays/{replay_id}", "delete"),
                                            "ReplayResults": ("/v1/replays/{replay_id}/results", "get"),
                                            "ReplayPlot": ("/v1/replays/{replay_id}/plot.png", "get")}),
}


def tighten(schema: Any) -> None:
    """Add the guard's pattern to plain strings and fix object sizes, in place, through nested schemas."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not ({"enum", "format", "pattern"} & set(schema)):
        schema["pattern"] = NO_CONTROL
    if schema.get("type") == "object":
        for old, new in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
            if old in schema:
                schema[new] = schema.pop(old)
    for key in ("items", "additionalProperties", "not"):
        tighten(schema.get(key))
    for key in ("properties", "patternProperties"):
        for sub in (schema.get(key) or {}).values():
            tighten(sub)
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key) or []:
            tighten(sub)


def _keyed(path: str) -> bool:
    """The operations that need a key: the REST API and OpenVLA's /act door (web/app.py checks the same)."""
    return path.startswith("/v1/") or path in ("/act", "/openvla/{model}/act")


def _pointer(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


class ConformancePlugin(BasePlugin):
    def init_spec(self, spec: APISpec) -> None:
        spec.components.security_scheme(SECURITY_SCHEME, {
            "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"})

    def schema_helper(self, name: str, definition: dict, **kwargs: Any) -> dict:
        schema = kwargs.get("schema")
        extra = getattr(resolve_schema_cls(schema), "OPENAPI_EXTRA", None) if schema is not None else None
        if extra:
            definition.update(extra)
        tighten(definition)
        return definition

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        for method, op in (operations or {}).items():
            for param in op.get("parameters") or []:
                if isinstance(param, dict):
                    tighten(param.get("schema"))
            for media in ((op.get("requestBody") or {}).get("content") or {}).values():
                tighten(media.get("schema"))
            op["security"] = [{SECURITY_SCHEME: []}] if _keyed(path or "") else []
            self._links(path or "", method, op)

    @staticmethod
    def _links(path: str, method: str, op: dict) -> None:
        spec = _LINKS.get((path, method))
        accepted = (op.get("responses") or {}).get("202") or (op.get("responses") or {}).get(202)
        if spec is None or not isinstance(accepted, dict):
            return
        param, targets = spec
        accepted["links"] = {name: {"operationRef": _pointer(p, m), "parameters": {param: "$response.body#/id"},
                                    "description": f"the submission's id as `{param}`"}
                             for name, (p, m) in targets.items()}
