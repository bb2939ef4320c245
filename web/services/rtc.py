"""Real-time chunking fields checked against the model's own description (from its workers' heartbeat), so a
request a worker would refuse is a 422 before anything is written: a model that is not a flow policy, prefix
actions of the wrong width, more of them than a chunk, a delay or horizon past the chunk."""
from __future__ import annotations

from typing import Any

from web.errors import ApiError


def check(spec: dict[str, Any], rtc: dict[str, Any] | None) -> None:
    if rtc is None:
        return
    if not spec.get("real_time_chunking"):
        raise ApiError(422, "rtc_unsupported", f"model {spec.get('name')!r} ({spec.get('family')}) is not a flow "
                       "policy: real-time chunking (the rtc field) is served for flow policies only (models listed "
                       "with real_time_chunking: true)", field="rtc")
    dim, chunk = spec.get("action_dim"), spec.get("chunk_length")
    prev = rtc["prev_actions"]
    if dim and len(prev[0]) != dim:
        raise ApiError(422, "invalid_rtc", f"rtc.prev_actions rows have {len(prev[0])} values; this model's actions "
                       f"have {dim}", field="rtc.prev_actions")
    if not chunk:
        return
    if len(prev) > chunk:
        raise ApiError(422, "invalid_rtc", f"rtc.prev_actions has {len(prev)} actions; at most the model's chunk "
                       f"length, {chunk}", field="rtc.prev_actions")
    for name in ("inference_delay", "execution_horizon"):
        if rtc.get(name) is not None and rtc[name] > chunk:
            raise ApiError(422, "invalid_rtc", f"rtc.{name} is {rtc[name]}; at most the model's chunk length, {chunk}",
                           field=f"rtc.{name}")
