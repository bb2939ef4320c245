"""Replay state in PostgreSQL. Each transition is one conditional statement, so a duplicate slice
message, a cancel racing a worker, or a redelivery after a crash can never finish a replay twice or
count a step twice.

queued -> running -> succeeded | failed   (the replay driver)
queued | running -> canceled              (the client)
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from workers.replays.metrics import ActionMetrics
from workers.store.jobs import now
from workers.store.models import REPLAY_TERMINAL, Replay, ReplayStep

ACTIVE = ("queued", "running")


def claim_slice(session: Session, replay_id: str, seq: int, grace_s: float) -> tuple[str, Replay | None]:
    """("run", the replay marked running) if this slice message is the current one, else what to do.

    The hand-off (advance slice_seq, then publish the next message) is two steps; a worker can die
    between them; its message then comes back (visibility timeout) one behind the row, at least `grace_s`
    after the hand-off, and is answered with "relay": publish the current slice again. Had the next
    message survived after all, the two copies run the same slice side by side until one hands on and the
    other sees that at its next window: waste for one slice, never a fork that lasts. Anything else
    behind the row is a stale duplicate and is dropped ("drop").
    """
    replay = session.get(Replay, uuid.UUID(replay_id), with_for_update=True)
    if replay is None or replay.state in REPLAY_TERMINAL:
        return "drop", None
    if seq == replay.slice_seq - 1:
        since = (now() - replay.handed_at).total_seconds() if replay.handed_at else grace_s
        return ("relay" if since >= grace_s else "drop"), replay
    if seq != replay.slice_seq:
        return "drop", None
    if replay.state == "queued":
        replay.state, replay.started_at = "running", now()
    return "run", replay


def hand_on(session: Session, replay_id: str, seq: int) -> bool:
    """Advance slice_seq from `seq`; only the one slice that succeeds here may enqueue the next."""
    res = session.execute(update(Replay).where(Replay.id == uuid.UUID(replay_id), Replay.slice_seq == seq,
                                               Replay.state == "running").values(slice_seq=seq + 1, handed_at=now()))
    return res.rowcount == 1


def stored_keys(session: Session, replay_id: str, episode: int) -> set[int]:
    rows = session.execute(select(ReplayStep.step).where(ReplayStep.replay_id == uuid.UUID(replay_id),
                                                         ReplayStep.episode == episode))
    return set(rows.scalars())


# One compiled statement for every window (a multi-VALUES insert built per call was compiled per call: a
# quarter of a replaying worker's Python time); RETURNING names only the rows it inserted.
_INSERT_STEPS = (insert(ReplayStep.__table__)
                 .on_conflict_do_nothing(index_elements=["replay_id", "episode", "step"])
                 .returning(ReplayStep.__table__.c.step))


def write_window(session: Session, replay_id: str, seq: int, rows: list[dict[str, Any]]) -> bool:
    """Insert a window's rows (duplicates ignored), add the number actually inserted to done_steps, and say
    whether slice `seq` still owns the replay (running, and no later slice took over), read from the same
    UPDATE ... RETURNING: checked between windows, so a cancel or a takeover stops the slice within one.

    Counting what this insert wrote, not the table, keeps the figure exact (a redelivered window inserts
    nothing twice) without a count over every stored row of the replay on each window."""
    rid = uuid.UUID(replay_id)
    inserted = len(session.execute(_INSERT_STEPS, [{**r, "replay_id": rid} for r in rows]).all()) if rows else 0
    row = session.execute(update(Replay).where(Replay.id == rid)
                          .values(done_steps=Replay.done_steps + inserted)
                          .execution_options(synchronize_session=False)
                          .returning(Replay.state, Replay.slice_seq)).one()
    return row.state == "running" and row.slice_seq == seq


def count_steps(session: Session, replay_id: str) -> int:
    return int(session.execute(select(func.count()).select_from(ReplayStep)
                               .where(ReplayStep.replay_id == uuid.UUID(replay_id))).scalar_one())


def iter_rows(session: Session, replay_id: str, batch: int = 1000) -> Iterator[ReplayStep]:
    """Stored rows ordered by (episode, step), fetched in batches so a long replay streams."""
    stmt = (select(ReplayStep).where(ReplayStep.replay_id == uuid.UUID(replay_id))
            .order_by(ReplayStep.episode, ReplayStep.step).execution_options(yield_per=batch))
    yield from session.scalars(stmt)


def summarise(rows: Iterable[ReplayStep], errors: int) -> dict[str, Any]:
    summary = ActionMetrics.from_rows(rows).summary()
    summary["step_errors"] = errors
    return summary


def succeed(session: Session, replay_id: str) -> bool:
    """Compute the summary from the stored rows and end the replay; False if it had already ended."""
    replay = session.get(Replay, uuid.UUID(replay_id), with_for_update=True)
    if replay is None or replay.state not in ACTIVE:
        return False
    errors = session.execute(select(func.count()).select_from(ReplayStep).where(
        ReplayStep.replay_id == replay.id, ReplayStep.error.is_not(None))).scalar_one()
    replay.summary = summarise(iter_rows(session, replay_id), int(errors))
    replay.done_steps = count_steps(session, replay_id)
    replay.state, replay.finished_at = "succeeded", now()
    return True


def fail(session: Session, replay_id: str, error: dict[str, Any]) -> bool:
    res = session.execute(update(Replay).where(Replay.id == uuid.UUID(replay_id), Replay.state.in_(ACTIVE))
                          .values(state="failed", error=error, finished_at=now()))
    return res.rowcount == 1


def cancel(session: Session, replay: Replay) -> bool:
    if replay.state in REPLAY_TERMINAL:
        return False
    replay.state, replay.finished_at = "canceled", now()
    replay.error = {"code": "canceled", "detail": "canceled by the client"}
    return True
