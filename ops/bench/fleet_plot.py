"""The fleet benchmark's figure: on-time fraction and goodput against the number of robots, ours and baseline
(simulator lines; the real stack's points, converted to unscaled robots on the sweep's pool, as markers); a row
for OpenVLA robots and one for pi0 robots."""
from __future__ import annotations

from pathlib import Path

from ops.bench.fleet_study import SWEEP_GPUS

ROWS = (("step", "OpenVLA-7B sim, 3 Hz, 300 ms deadline", "actions"),
        ("chunk", "pi0 sim, 50 Hz, 25 of 50 actions per chunk", "ticks fed"))


def plot(des: dict, points: list[dict], path: str, scale: float, gpus: int = SWEEP_GPUS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.4))
    for (kind, what, unit), (ax1, ax2) in zip(ROWS, axes, strict=True):
        for who, colour in (("ours", "tab:green"), ("baseline", "tab:red")):
            rows = [r for r in des[kind]["sweep"] if r["who"] == who]
            xs = [r["robots"] for r in rows]
            ax1.plot(xs, [r["on_time_fraction"] for r in rows], "-o", color=colour, label=f"{who} (simulator)")
            ax2.plot(xs, [r["goodput"] for r in rows], "-o", color=colour, label=f"{who} (simulator)")
        for p in (q for q in points if q["kind"] == kind):
            colour = "tab:red" if p["baseline"] else "tab:green"
            marker = "s" if p["workers"] == 1 else "^"
            # w stack workers at a share of their capacity = the same share of the sweep's pool; the stack's
            # goodput is per scaled second, for w workers
            x = p["robots"] * gpus / p["workers"]
            y = p["goodput"] * scale * gpus / p["workers"]
            ax1.plot([x], [p["on_time_fraction"]], marker, color=colour, markersize=9, markerfacecolor="none")
            ax2.plot([x], [y], marker, color=colour, markersize=9, markerfacecolor="none")
        for ax in (ax1, ax2):
            ax.axvline(des[kind]["capacity_robots_per_gpu"] * gpus, color="grey", linestyle=":", label="capacity")
            ax.set_xlabel(f"robots ({what}) on {gpus} GPUs")
            ax.grid(alpha=0.3)
        ax1.set_ylabel("ticks served on time")
        ax2.set_ylabel(f"goodput (on-time {unit}/s)")
        ax1.legend(fontsize=8)
    axes[0][1].set_title(f"open: real stack, time x{scale:g}, 1 (squares) or 4 (triangles) sim workers, scaled "
                         f"to {gpus}", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
