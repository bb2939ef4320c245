"""The fleet benchmark's figure: on-time fraction and goodput against the number of robots, ours and baseline
(simulator lines; the real stack's points, converted to unscaled robots, as markers)."""
from __future__ import annotations

from pathlib import Path


def plot(sweep: list[dict], points: list[dict], path: str, gpus: int, cap: float, scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for who, colour in (("ours", "tab:green"), ("baseline", "tab:red")):
        rows = [r for r in sweep if r["who"] == who]
        xs = [r["robots"] for r in rows]
        ax1.plot(xs, [r["on_time_fraction"] for r in rows], "-o", color=colour, label=f"{who} (simulator)")
        ax2.plot(xs, [r["goodput"] for r in rows], "-o", color=colour, label=f"{who} (simulator)")
    for p in points:
        if p["workers"] != 1:
            continue
        colour = "tab:red" if p["baseline"] else "tab:green"
        # one stack worker at a share of its capacity = the same share of the sweep's pool; its goodput is
        # per scaled second, for one worker
        x = p["robots"] * gpus
        ax1.plot([x], [p["on_time_fraction"]], "s", color=colour, markersize=9, markerfacecolor="none")
        ax2.plot([x], [p["goodput"] * scale * gpus], "s", color=colour, markersize=9, markerfacecolor="none")
    for ax in (ax1, ax2):
        ax.axvline(cap * gpus, color="grey", linestyle=":", label="capacity")
        ax.set_xlabel(f"robots (OpenVLA-7B sim, 3 Hz, 300 ms deadline) on {gpus} GPUs")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("ticks served on time")
    ax2.set_ylabel("goodput (on-time actions/s)")
    ax1.legend(fontsize=8)
    ax2.set_title(f"squares: real stack, 1 sim worker, time x{scale:g} (robots x{gpus}, goodput x{gpus * scale:g})",
                  fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
