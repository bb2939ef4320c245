"""The one typed error a job or replay can end with, as stored in its row and shown to the customer.

Customers see our code and our sentence, never exception text (which can name hosts, paths or library
internals); the exception itself goes to the worker's log with the job id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# code -> the sentence shown when the raising site has nothing more specific (and safe) to say.
CODES: dict[str, str] = {
    "invalid_input": "the model cannot use this input",
    "images_missing": "the request's images were lost before a worker read them; submit it again",
    "deadline_exceeded": "the deadline passed before the action was computed",
    "model_unavailable": "the model is not available on its worker; try again later",
    "inference_error": "the model failed on this input",
    "safety_error": "the safety stage could not judge the action and failed closed",
    "dataset_error": "the dataset cannot be replayed",
    "internal_error": "an internal error ended this request",
    "lost": "the request's worker was lost and its deadline passed before it could be retried",
}


@dataclass(frozen=True)
class JobError:
    code: str
    detail: str = ""
    field: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown job error code {self.code!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "detail": self.detail or CODES[self.code]}
        if self.field:
            out["field"] = self.field
        return out
