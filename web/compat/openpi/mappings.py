"""Named input mappings: openpi observation layouts onto a model's cameras, state and prompt.

The layouts are those of openpi's published examples (`examples/droid`, `examples/libero`, `examples/aloha_*`);
the camera slots follow openpi's own input transforms (droid_policy, libero_policy, aloha_policy): slot 0 is
the model's first camera (pi0's `base_0_rgb`), slot 1 its second (`left_wrist_0_rgb`), slot 2 its third. A
model with fewer cameras ignores the images it has no slot for; a slot with no image is left out (pi0 masks it).

Real-time chunking (flow policies) in any layout: `rtc/prev_actions` ((n, D) array: the previous chunk's actions
not yet executed, next one first, as the service returned them), `rtc/inference_delay` and, optionally,
`rtc/execution_horizon`, `rtc/max_guidance_weight`, `rtc/prefix_attention_schedule`, `rtc/jacobian`; flat keys
or an `rtc` map with the same names. They become the REST `rtc` field, validated the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from web.compat.arrays import pending_image
from web.errors import ApiError
from web.input_guard import check_text


@dataclass(frozen=True)
class Mapping:
    name: str
    images: tuple[tuple[str, int], ...]  # (observation key, camera slot); "a/b" reads obs["a"]["b"]
    state: tuple[str, ...]  # observation keys concatenated, in order, into the state vector
    prompt: str = "prompt"
    channels_first: bool = False  # ALOHA sends (3, H, W)
    detect: tuple[str, ...] = field(default=())  # keys whose presence identifies the layout


MAPPINGS = {m.name: m for m in (
    Mapping("droid", (("observation/exterior_image_1_left", 0), ("observation/wrist_image_left", 1)),
            ("observation/joint_position", "observation/gripper_position"),
            detect=("observation/exterior_image_1_left",)),
    Mapping("libero", (("observation/image", 0), ("observation/wrist_image", 1)), ("observation/state",),
            detect=("observation/image",)),
    Mapping("aloha", (("images/cam_high", 0), ("images/cam_left_wrist", 1), ("images/cam_right_wrist", 2)),
            ("state",), channels_first=True, detect=("images/cam_high",)),
)}
NAMES = ("auto", "native", *MAPPINGS)


def _get(obs: dict[str, Any], key: str) -> Any:
    """openpi's flat keys contain '/', ALOHA nests images under 'images': try the flat key first."""
    if key in obs:
        return obs[key]
    head, _, tail = key.partition("/")
    inner = obs.get(head)
    return inner.get(tail) if tail and isinstance(inner, dict) else None


def resolve(name: str, obs: dict[str, Any]) -> Mapping | None:
    """The mapping to use for one observation: the named one, or for `auto` the first whose keys are present;
    None means `native` (images keyed by the model's camera names)."""
    if name in MAPPINGS:
        return MAPPINGS[name]
    if name == "auto":
        return next((m for m in MAPPINGS.values() if all(_get(obs, k) is not None for k in m.detect)), None)
    return None


# openpi's protocol carries no deadline per message: a robot whose deadline moves with its queued actions (a
# chunk player asks for the next chunk "by the time these run out") puts it in the observation, as it puts
# `vlaapi_idempotency_key`; no layout reads either as an input.
DEADLINE_KEY = "vlaapi_deadline_ms"


def to_body(obs: Any, spec: dict[str, Any], mapping_name: str, default_prompt: str | None) -> dict[str, Any]:
    """The body of a POST /v1/inference request (without model and options) for one openpi observation."""
    if not isinstance(obs, dict):
        raise ApiError(422, "invalid_observation", "an observation is a msgpack map of names to arrays")
    obs = {k.decode() if isinstance(k, bytes) else k: v for k, v in obs.items()}
    mapping = resolve(mapping_name, obs)
    cameras = list(spec.get("cameras") or ["primary"])
    if mapping is None:
        images, state = _native_images(obs, cameras), obs.get("state")
    else:
        images = {cameras[slot]: pending_image(_get(obs, key), key, channels_first=mapping.channels_first)
                  for key, slot in mapping.images if slot < len(cameras) and _get(obs, key) is not None}
        parts = [_get(obs, k) for k in mapping.state]
        state = None if any(p is None for p in parts) else np.concatenate([np.ravel(np.asarray(p)) for p in parts])
    if not images:
        which = mapping.name if mapping else "native (images keyed by camera name)"
        raise ApiError(422, "invalid_observation", f"no image found for layout {which}; this model's cameras are "
                       f"{cameras}; choose a layout with ?mapping={'|'.join(NAMES)}", field="images")
    prompt = obs.get(mapping.prompt if mapping else "prompt", default_prompt)
    body: dict[str, Any] = {"images": images, "instruction": _text(prompt)}
    if state is not None and spec.get("state_dim"):
        body["state"] = _floats(state)
    rtc = _rtc(obs)
    if rtc:
        body["rtc"] = rtc
    if obs.get(DEADLINE_KEY) is not None:  # this message's own deadline, over the connection's ?deadline_ms
        deadline = obs[DEADLINE_KEY]
        body["deadline_ms"] = int(deadline) if isinstance(deadline, np.integer) else deadline  # the schema checks it
    return body


RTC_KEYS = ("prev_actions", "inference_delay", "execution_horizon", "max_guidance_weight",
            "prefix_attention_schedule", "jacobian")


def _rtc(obs: dict[str, Any]) -> dict[str, Any]:
    """The `rtc/...` keys as the REST field: arrays to lists, numpy scalars to Python, bytes to text (the schema
    then checks them as it checks REST's)."""
    inner = obs.get("rtc")
    if isinstance(inner, dict):
        obs = {**obs, "rtc": {k.decode() if isinstance(k, bytes) else k: v for k, v in inner.items()}}
    out = {}
    for key in RTC_KEYS:
        value = _get(obs, f"rtc/{key}")
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, np.ndarray | np.generic):
            value = value.tolist()
        out[key] = value
    return out


def _native_images(obs: dict[str, Any], cameras: list[str]) -> dict[str, Any]:
    images = obs.get("images")
    if not isinstance(images, dict):
        return {}
    out = {}
    for cam, arr in images.items():
        name = cam.decode() if isinstance(cam, bytes) else str(cam)
        out[name] = pending_image(arr, f"images.{name}")
    return out


def _text(prompt: Any) -> Any:
    if isinstance(prompt, bytes | np.ndarray | np.generic):
        try:
            prompt = prompt.decode() if isinstance(prompt, bytes) else str(np.asarray(prompt).item())
        except (UnicodeDecodeError, ValueError):
            raise ApiError(422, "invalid_observation", "prompt must be a string", field="prompt") from None
    if isinstance(prompt, str):
        check_text(prompt, "prompt")  # the input guard's rule, whatever form the prompt came in
    return prompt


def _floats(state: Any) -> list[float]:
    arr = np.asarray(state)
    if arr.dtype.kind not in "uifb" or arr.ndim > 1:
        raise ApiError(422, "invalid_state", "state must be a vector of numbers", field="state")
    return [float(x) for x in arr.ravel()]
