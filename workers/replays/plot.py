"""A PNG of a replay: one panel per action dimension, predicted against recorded, safety bands shaded.

Uses matplotlib's object API with the Agg canvas directly (no pyplot): no global figure state, so it is
safe in a threaded worker and never tries to open a display.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from workers.replays.rows import ReplayRow, as_row

# Most severe first: a rejected step is drawn red even if it was also flagged.
BANDS = (("rejected", "#d62728"), ("modified", "#ff7f0e"), ("flagged", "#ffd700"))
DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def plot_replay(rows: Iterable[Any], out: BinaryIO, *, title: str | None = None, dpi: int = 80) -> None:
    """Write a PNG to `out`. Steps are laid end to end in row order; episode starts get a dotted line."""
    data = [as_row(r) for r in rows]
    dims = max([len(r.recorded_action) for r in data] + [len(r.model_action or []) for r in data] + [1])
    fig = Figure(figsize=(10, 1.8 * dims + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(len(data))
    predicted, recorded = _matrix(data, dims, True), _matrix(data, dims, False)
    for d, ax in enumerate(axes):
        _shade(ax, data)
        ax.plot(x, recorded[:, d], color="#1f77b4", lw=1.2, label="recorded")
        ax.plot(x, predicted[:, d], color="#2ca02c", lw=1.2, ls="--", label="predicted")
        for start in _episode_starts(data)[1:]:
            ax.axvline(start - 0.5, color="grey", ls=":", lw=0.8)
        ax.set_ylabel(DIM_NAMES[d] if d < len(DIM_NAMES) else f"dim {d}")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    handles = axes[0].get_legend_handles_labels()[0] + [Patch(color=c, alpha=0.3, label=n) for n, c in BANDS]
    axes[0].legend(handles=handles, loc="upper right", fontsize="small", ncol=5)
    fig.suptitle(title or f"Replay: {len(data)} steps")
    fig.tight_layout()
    fig.savefig(out, format="png")


def _matrix(data: list[ReplayRow], dims: int, predicted: bool) -> np.ndarray:
    # NaN where a value is missing (no prediction, shorter vector): matplotlib leaves a gap there.
    out = np.full((len(data), dims), np.nan)
    for i, row in enumerate(data):
        values = row.model_action if predicted else row.recorded_action
        if values:
            out[i, : len(values)] = values[:dims]
    return out


def _shade(ax, data: list[ReplayRow]) -> None:
    for name, color in BANDS:
        for start, stop in _runs([_band(r) == name for r in data]):
            ax.axvspan(start - 0.5, stop - 0.5, color=color, alpha=0.3, lw=0)


def _band(row: ReplayRow) -> str | None:
    if row.rejected:
        return "rejected"
    if row.modified:
        return "modified"
    return "flagged" if row.flagged else None


def _runs(mask: list[bool]) -> list[tuple[int, int]]:
    """Half-open [start, stop) runs of True, so a long flagged stretch is one patch, not hundreds."""
    runs, start = [], None
    for i, on in enumerate([*mask, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _episode_starts(data: list[ReplayRow]) -> list[int]:
    return [i for i, r in enumerate(data) if i == 0 or r.episode != data[i - 1].episode]
