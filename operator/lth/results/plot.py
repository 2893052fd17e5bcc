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


def stability_plot(status: RunStatus, path: Path) -> Path | None:
    """stability.png (rewindTo auto): the instability against the rewind point k, the threshold
    and the chosen point; beside it, the top-1 error along each measured path. None without one."""
    stability = status.stability
    measured = [m for m in stability.points if m.instability is not None] if stability else []
    if stability is None or not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    xs = [m.epochs for m in measured]
    left.plot(xs, [m.instability for m in measured], "o-", label="instability (error barrier)")
    left.axhline(
        stability.threshold, color="grey", linestyle="--", label=f"threshold {stability.threshold:g}"
    )
    if stability.chosen is not None and stability.chosen.instability is not None:
        left.plot(
            stability.chosen.epochs, stability.chosen.instability, "*", markersize=14, color="gold",
            markeredgecolor="black", label=f"chosen: {stability.chosen.rewind_to}",
        )  # fmt: skip
    left.set_xscale("symlog", linthresh=min([x for x in stability.ladder if x > 0] or [1.0]))
    left.set_xticks(stability.ladder, [f"{x:g}" for x in stability.ladder])
    left.minorticks_off()
    left.set_xlabel("rewind point k (epochs)")
    left.set_ylabel("top-1 error barrier (points)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    for m in measured:
        errors = m.errors or []
        alphas = [i / max(len(errors) - 1, 1) for i in range(len(errors))]
        right.plot(alphas, errors, ".-", label=f"k = {m.epochs:g} ep")
    right.set_xlabel("position on the path (copy a = 0, copy b = 1)")
    right.set_ylabel("top-1 error (%)")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle("Instability analysis (rewindTo auto)")
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, format="png"))
    plt.close(figure)
    return path
