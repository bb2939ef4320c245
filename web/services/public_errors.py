"""What a customer reads about a failed job or replay: our code and our sentence, never exception text.

Workers store the full error (with the exception's text) for operators; the API shows a code's detail only
when that detail is a sentence of ours (a refused input, a deadline, a cancel), and a fixed sentence per
code otherwise: exception text can name hosts, paths, users and library internals.
"""
from __future__ import annotations

from typing import Any

# Codes whose detail is written by our own code (PolicyInputError, DatasetError messages, fixed sentences).
OWN_WORDS = frozenset({"invalid_input", "images_missing", "dataset_error", "deadline_exceeded", "canceled", "expired"})
FIXED = {
    "model_unavailable": "the model's worker cannot serve it now; retry later",
    "inference_error": "the model failed on this request; quote the request_id when reporting it",
    "safety_error": "the safety stage failed, so no action is returned (it fails closed)",
    "internal_error": "an internal error ended this; quote the request_id when reporting it",
    "lost": "its message or its worker was lost (a broker or worker outage) before an action was computed",
}
GENERIC = "this did not complete; quote the request_id when reporting it"


def public_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return error
    code = str(error.get("code") or "failed")
    detail = error.get("detail") if code in OWN_WORDS else FIXED.get(code, GENERIC)
    out: dict[str, Any] = {"code": code, "detail": detail or GENERIC}
    if error.get("field"):
        out["field"] = error["field"]
    return out
