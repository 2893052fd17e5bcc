"""learning-curves.png: top-1 after each epoch of every level, read from the levels'
progress.jsonl, on the global epoch axis (a rewound level starts at k); each level in its own
colour, its controls dashed in the same colour, a search level dotted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lth.api import RunStatus
from lth.api.naming import RunLayout
from lth.results.tables import labels, search_note
from lth.storage.files import atomic_write, read_progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONTROL_MARKERS = {"random-reinit": "s", "random-prune": "^", "dense": ""}


def curves_figure(status: RunStatus, run_dir: Path) -> Figure:
    """The figure: one line per level and branch that has finished an epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    layout = RunLayout(run_dir)
    rows = sorted(status.levels, key=lambda r: (r.level, r.branch != "main", r.branch))
    levels = sorted({r.level for r in rows})
    colours = plt.get_cmap("viridis")
    names = labels(status)
    for row in rows:
        history = read_progress(layout.level(row.level, row.branch).progress)
        points = [(r["epoch"], r["top1"]) for r in history if r.get("top1") is not None]
        if not points:
            continue
        colour = colours(0.85 * levels.index(row.level) / max(len(levels) - 1, 1))  # not the pale end
        density = f", {row.density * 100:.1f}%" if row.density is not None else ""
        if row.branch != "main":
            style, label = "--", f"level {row.level} {names[row.branch]}"
            marker = CONTROL_MARKERS.get(row.branch, "")
        elif search_note(status, row.level):
            style, marker, label = ":", "", f"level {row.level} (search)"
        else:
            style, marker, label = "-", "", f"level {row.level}{density}"
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, linestyle=style, marker=marker, markersize=3, color=colour, label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch of the schedule (a rewound level starts after the rewind point)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    axes.set_title("Learning curves: top-1 after each epoch (controls dashed)")
    return figure


def learning_curves(status: RunStatus, run_dir: Path, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = curves_figure(status, run_dir)
    # "tight": the legend beside the axes is part of the picture.
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", bbox_inches="tight"))
    plt.close(figure)
    return path
