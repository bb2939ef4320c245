"""The replay driver: one bounded slice of a replay per task, then it hands on to the next slice.

A slice claims the replay (only the message carrying the row's current slice_seq may run), reads the
steps already stored, and feeds the rest to this worker's batcher a window at a time (about one batch,
so interactive items, which the batcher serves first, never queue behind a flood of replay items). Each
window's rows are inserted ON CONFLICT DO NOTHING and done_steps is recounted from the table. Between
windows it re-reads the replay, so a DELETE stops it within one window. After SLICE_MAX_STEPS steps or
slice_seconds() it advances slice_seq and returns the next slice's message, which the task sends
(workers/tasks.py: the driver never imports the task module): no task outlives the broker's visibility
timeout, and a worker that dies mid-slice leaves a message that is redelivered and resumes from the
stored steps.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.gpu import runtime
from workers.gpu.items import BatcherStopped, ModelUnavailable
from workers.policies.errors import PolicyInputError
from workers.replays import Dataset, DatasetError, Step, discard_upload, open_dataset, resolve_dataset_path
from workers.settings import Settings
from workers.stages.replay_steps import collect_window, resolve_robot, step_row, submit_window, to_observation
from workers.stages.retry import is_transient
from workers.store import replays as store
from workers.store.db import session_scope
from workers.wire import notify
from workers.wire.errors import JobError
from workers.wire.queues import REPLAY_INFLIGHT_TTL_S, replay_slice_s

log = logging.getLogger(__name__)
SLICE_MAX_STEPS = 500


@dataclass
class Slice:
    replay_id: str
    seq: int
    dataset: dict[str, Any]
    options: dict[str, Any]
    deadline: float  # time.monotonic() at which the slice hands on
    steps_left: int


def slice_seconds(settings: Settings) -> float:
    return replay_slice_s(settings.broker_visibility_timeout_s)


def dataset_root(settings: Settings, root: str) -> Path:
    return settings.replay_upload_dir if root == "upload" else settings.replay_data_root


Outcome = tuple[str, dict[str, Any] | None]  # what happened (logs, tests), and the message to send next


def run_slice(msg: dict[str, Any], settings: Settings) -> Outcome:
    """Run one slice of msg["replay_id"]; returns what happened and the follow-up message, if any."""
    slots = runtime.current().replay_slots
    if not slots.acquire(timeout=1.0):
        return "busy", msg  # every replay slot here is busy: give the thread back, the copy waits its turn
    try:
        return _run_slice(msg, settings)
    finally:
        slots.release()


def _run_slice(msg: dict[str, Any], settings: Settings) -> Outcome:
    rid, seq = msg["replay_id"], int(msg["seq"])
    with session_scope(settings.database_url) as s:
        action, replay = store.claim_slice(s, rid, seq, settings.broker_visibility_timeout_s / 2.0)
        if action != "run" or replay is None:
            return ("relayed", {**msg, "seq": seq + 1}) if action == "relay" else ("skipped", None)
        sl = Slice(rid, seq, dict(replay.dataset), resolve_robot(dict(replay.options), settings),
                   time.monotonic() + slice_seconds(settings), SLICE_MAX_STEPS)
    _touch_inflight(settings, msg)
    try:
        outcome = _drive(sl, settings)
    except DatasetError as exc:
        return _fail(settings, msg, JobError("dataset_error", exc.message, exc.field))
    except PolicyInputError as exc:
        return _fail(settings, msg, JobError("invalid_input", f"the dataset does not fit model {msg['model']}: "
                                            f"{exc.message}", exc.field))
    except ModelUnavailable as exc:
        log.warning("model unavailable for a replay", extra={"replay_id": rid}, exc_info=exc)
        return _fail(settings, msg, JobError("model_unavailable"))
    except BatcherStopped:
        outcome = "retry"  # the worker is shutting down: the same slice runs again elsewhere
    except Exception as exc:
        if is_transient(exc):  # a backend blip is no reason to fail the replay: the reaper resumes it
            log.warning("replay slice stopped by a backend error", extra={"replay_id": rid}, exc_info=True)
            raise
        log.exception("replay slice failed", extra={"replay_id": rid})
        return _fail(settings, msg, JobError("internal_error"))
    return _after(settings, msg, outcome)


def _drive(sl: Slice, settings: Settings) -> str:
    """'done' when every selected step is stored, 'more' when the slice's budget ran out, 'stopped'
    when the replay was canceled or another slice took over, 'retry' when the model is not ready yet."""
    batcher = runtime.get_batcher()
    if not batcher.wait_ready(max(sl.deadline - time.monotonic(), 0.1)):
        if batcher.state == "failed":
            raise ModelUnavailable(batcher.name, batcher.error or RuntimeError("load failed"))
        return "retry"
    # A full batch per window: the batcher itself shrinks replay's share while interactive work is about.
    window = batcher.max_batch_size
    path = resolve_dataset_path(sl.dataset["path"], dataset_root(settings, sl.dataset.get("root", "data")))
    # Two windows in flight: the next is queued in the batcher while this one's safety checks and rows are
    # written, so the model never idles on our bookkeeping (interactive items still go first).
    pending: tuple[list[Step], list] | None = None
    with open_dataset(path, instruction=sl.options.get("instruction")) as ds:
        for steps in _windows(_pending(ds, sl, settings), window):
            obs = [to_observation(st, batcher.spec, sl.options, sl.dataset.get("camera_map")) for st in steps]
            if pending and batcher.interactive_recent():
                # A control loop is using the model: keep one window in flight, so the replay's bookkeeping
                # does not run beside its passes and compete with the interactive request for the CPU.
                outcome = _store(sl, settings, *pending)
                pending = None
                if outcome:
                    return outcome
            futures = submit_window(batcher, obs)
            outcome = _store(sl, settings, *pending) if pending else None
            if outcome:
                for fut in futures:
                    fut.cancel()
                return outcome
            pending = (steps, futures)
    return (_store(sl, settings, *pending) if pending else None) or "done"


def _store(sl: Slice, settings: Settings, steps: list[Step], futures: list) -> str | None:
    """Collect one window, write its rows; a reason to end the slice, or None to go on."""
    done = collect_window(futures, max(sl.deadline - time.monotonic(), 1.0))
    rows = [step_row(st, f, sl.options, settings) for st, f in zip(steps, done, strict=True) if f is not None]
    with session_scope(settings.database_url) as s:
        current = store.write_window(s, sl.replay_id, sl.seq, rows)
    sl.steps_left -= len(rows)
    if not current:
        return "stopped"
    if len(rows) < len(steps) or sl.steps_left <= 0 or time.monotonic() >= sl.deadline:
        return "more"
    return None


def _pending(ds: Dataset, sl: Slice, settings: Settings) -> Iterator[Step]:
    """The selected steps not stored yet, in (episode, step) order; stored episodes are not decoded."""
    episodes, step_range = sl.dataset.get("episodes"), sl.dataset.get("step_range")
    for sel in ds.select(episodes, tuple(step_range) if step_range else None):
        with session_scope(settings.database_url) as s:
            stored = store.stored_keys(s, sl.replay_id, sel.info.index)
        missing = [t for t in range(sel.start, sel.stop) if t not in stored]
        if not missing:
            continue
        for step in ds.iter_steps([sel.info.index], (missing[0], sel.stop)):
            if step.step not in stored:
                yield step


def _windows(steps: Iterator[Step], size: int) -> Iterator[list[Step]]:
    batch: list[Step] = []
    for step in steps:
        batch.append(step)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _after(settings: Settings, msg: dict[str, Any], outcome: str) -> Outcome:
    rid, seq = msg["replay_id"], int(msg["seq"])
    if outcome == "done":
        with session_scope(settings.database_url) as s:
            ended = store.succeed(s, rid)
        if ended:
            _ended(settings, msg, "succeeded")
        return ("succeeded" if ended else "stopped"), None
    if outcome == "retry":
        return "retry", msg  # same seq: this message is acked when we return, the copy carries the slice on
    if outcome == "more":
        with session_scope(settings.database_url) as s:
            handed = store.hand_on(s, rid, seq)
        return ("more", {**msg, "seq": seq + 1}) if handed else ("stopped", None)
    return outcome, None


def _fail(settings: Settings, msg: dict[str, Any], error: JobError) -> Outcome:
    with session_scope(settings.database_url) as s:
        ended = store.fail(s, msg["replay_id"], error.to_dict())
    if ended:
        _ended(settings, msg, "failed")
    return "failed", None


def _ended(settings: Settings, msg: dict[str, Any], state: str) -> None:
    discard_upload(settings.replay_upload_dir, msg.get("dataset") or {})
    notify.ended(notify.client(settings.redis_url), msg["replay_id"], state, msg.get("inflight_key"))


def _touch_inflight(settings: Settings, msg: dict[str, Any]) -> None:
    """Renew the customer's in-flight lease for this replay (XX: never re-create one the client released).

    The lease is bookkeeping for admission, not for correctness: a Redis hiccup must not fail the slice.
    """
    if not msg.get("inflight_key"):
        return
    key, ttl_ms = msg["inflight_key"], int(REPLAY_INFLIGHT_TTL_S * 1000)
    try:
        r = notify.client(settings.redis_url)
        r.zadd(key, {msg["replay_id"]: int(time.time() * 1000) + ttl_ms}, xx=True)
        if r.pttl(key) < ttl_ms:  # PEXPIRE ... GT needs Redis 7; the race here only lengthens a lease
            r.pexpire(key, ttl_ms)
    except Exception:
        log.warning("could not renew the replay's in-flight lease", exc_info=True)
