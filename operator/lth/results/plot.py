"""accuracy.png: top-1 against density, log scale, the controls beside the ticket."""

from __future__ import annotations

from pathlib import Path

from lth.api import RunStatus
from lth.api.branches import BRANCHES
from lth.results.tables import branches, labels, rows, search_note
from lth.storage.files import atomic_write


def plot(status: RunStatus, path: Path) -> Path:
    """Top-1 against density (log scale, sparser to the right), dense as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    table = rows(status)
    names = labels(status)
    for branch in branches(status):
        marker = BRANCHES[branch].marker  # type: ignore[index]
        if marker is None:
            continue  # the dense reference is the horizontal line
        points = [
            (r.density * 100, r.top1[branch])
            for r in table
            if branch in r.top1 and not search_note(status, r.level)
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker, markersize=8, label=names[branch])
    if status.dense_top1 is not None:
        dense = f"{names['dense']} ({status.dense_top1:.1f}%)"
        axes.axhline(status.dense_top1, color="grey", linewidth=1, label=dense)
    if status.best is not None:
        axes.plot(
            status.best.density * 100,
            status.best.top1,
            "*",
            markersize=14,
            color="gold",
            markeredgecolor="black",
            label=f"best ticket (level {status.best.level})",
        )
    axes.set_xscale("log")
    densities = [r.density * 100 for r in table if r.density] or [100.0]
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if min(densities) * 0.9 <= t <= 100]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes.minorticks_off()
    axes.invert_xaxis()
    axes.set_xlabel("weights remaining (%), log scale")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    transfer = status.ticket
    axes.set_title(
        f"Transferred ticket ({transfer.source}) vs controls" if transfer else "Accuracy vs density"
    )
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, format="png"))
    plt.close(figure)
    return path
