"""One window of a replay: recorded steps -> observations -> batcher (replay priority) -> safety -> rows.

Plain functions over the policy's spec and the batcher, so they are testable without Celery.
"""
from __future__ import annotations

import logging
import time
import zlib
from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from safety.request import validate_robot_config
from workers.gpu.batcher import BACKGROUND, MicroBatcher
from workers.policies.base import Observation, PolicyResult, PolicySpec
from workers.policies.errors import PolicyInputError
from workers.replays import Step
from workers.settings import Settings
from workers.stages.safety import judge

log = logging.getLogger(__name__)


def map_cameras(images: dict[str, np.ndarray], camera_map: dict[str, str] | None,
                policy_cameras: list[str]) -> dict[str, np.ndarray]:
    """Dataset cameras renamed to the policy's: by the request's map, else in order (first to first).

    With no map, dataset cameras beyond the policy's count are dropped: a policy that sees one camera
    is replayed on a two-camera recording without the customer having to say so.
    """
    if camera_map:
        return {camera_map[cam]: img for cam, img in images.items() if cam in camera_map}
    return dict(zip(policy_cameras, images.values(), strict=False))


def to_observation(step: Step, spec: PolicySpec, options: dict[str, Any], camera_map: dict[str, str] | None,
                   ) -> Observation:
    # Only a policy that takes state gets it: OpenVLA ignores state, pi0 and SmolVLA require one of their length.
    state = step.state if spec.state_dim else None
    policy_options: dict[str, Any] = {}
    if options.get("unnorm_key"):
        policy_options["unnorm_key"] = options["unnorm_key"]
    if "seed" in spec.request_options:
        # A seed per (episode, step): a step recomputed after a crash gives the same chunk, and replaying a
        # dataset twice gives the same predictions (reproducible evaluations).
        policy_options["seed"] = zlib.crc32(f"{step.episode}:{step.step}".encode())
    return Observation(images=map_cameras(step.images, camera_map, spec.cameras),
                       instruction=options.get("instruction") or step.instruction, state=state,
                       options=policy_options)


def robot_state(step: Step, source: str | None) -> dict[str, list[float]] | None:
    """The safety stage's robot state: from the recorded state vector when asked, else none."""
    if source != "dataset" or step.state is None or step.state.size < 3:
        return None
    out = {"ee_position": [float(v) for v in step.state[:3]]}
    if step.state.size >= 6:
        out["ee_orientation"] = [float(v) for v in step.state[3:6]]
    return out


def submit_window(batcher: MicroBatcher, observations: list[Observation]) -> list[Future[PolicyResult]]:
    return [batcher.submit(obs, priority=BACKGROUND) for obs in observations]


def collect_window(futures: list[Future[PolicyResult]], timeout_s: float) -> list[Future[PolicyResult] | None]:
    """Wait for a submitted window; futures still pending at the timeout are cancelled and returned as None,
    to be computed by a later slice."""
    wait(futures, timeout=timeout_s)
    for fut in futures:
        fut.cancel()  # a no-op once computed or running; frees the batcher of what interactive work delayed
    running = [f for f in futures if not f.done()]
    if running:  # their pass has started: it ends soon, and its result is worth keeping
        wait(running, timeout=timeout_s)
    return [f if f.done() and not f.cancelled() else None for f in futures]


def resolve_robot(options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """options with its robot_config resolved to the safety library's RobotConfig, once per slice, for the
    steps it judges under one robot. A config that does not resolve is left as given: each step then records the
    same error it would have alone (fail closed, per row).

    Every step is judged: a replay stored without a robot (submitted before the web resolved one) is judged
    against SAFETY_DEFAULT_ROBOT in monitor mode, as the web does today for a dataset naming no known robot."""
    config = options.get("robot_config")
    if config is None:
        safety = dict(options.get("safety") or {})
        safety["mode"] = safety.get("mode") or "monitor"
        options = {**options, "robot_config": {"type": settings.safety_default_robot}, "safety": safety,
                   "robot_source": "default"}
        config = options["robot_config"]
    if not isinstance(config, dict):
        return options
    try:
        return {**options, "robot_config": validate_robot_config(config)}
    except Exception:
        return options


def step_row(step: Step, fut: Future[PolicyResult], options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The stored row of one step. A policy input error is the dataset's fault and is raised, failing
    the replay; any other per-step failure is recorded on its row, with no action."""
    row: dict[str, Any] = {"episode": step.episode, "step": step.step, "predicted_action": None,
                           "raw_action": None, "recorded_action": [float(v) for v in step.recorded_action],
                           "safety_decision": None, "safety_flags": [], "safety_profile": None, "latency_ms": None,
                           "error": None}
    exc = fut.exception()
    if isinstance(exc, PolicyInputError):
        raise exc
    if exc is not None:
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    result = fut.result()
    trace = fut.trace  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    actions = np.asarray(result.actions, dtype=np.float64)
    row["raw_action"] = actions[0].tolist()
    try:
        _apply_safety(row, actions, step, options, settings)
    except Exception:  # fail closed: an action the shield could not judge is not an action
        log.warning("replay step could not be judged", exc_info=True)
        row["predicted_action"], row["error"] = None, "safety: the safety stage could not judge the action"
    compute_s = (trace.finished_at or time.monotonic()) - trace.enqueued_at
    row["latency_ms"] = round((compute_s + time.perf_counter() - t0) * 1000.0, 3)
    return row


def _apply_safety(row: dict[str, Any], actions: np.ndarray, step: Step, options: dict[str, Any],
                  settings: Settings) -> None:
    state = robot_state(step, options.get("robot_state_source"))
    report = judge(actions, robot_config=options.get("robot_config"), robot_state=state,
                   options=options.get("safety"), settings=settings)
    row["safety_decision"], row["safety_flags"] = report["decision"], report["flags"]
    row["safety_profile"] = _profile_name(report.get("robot_profile") or {})
    row["predicted_action"] = None if report["actions"] is None else np.asarray(report["actions"])[0].tolist()


def _profile_name(profile: dict[str, Any]) -> str | None:
    """`<id>@<version>`: the profile a row was judged by, as the safety report names it."""
    if not profile.get("id"):
        return None
    return f"{profile['id']}@{profile['version']}" if profile.get("version") else str(profile["id"])
