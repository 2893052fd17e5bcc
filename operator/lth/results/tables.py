"""The accuracy-vs-density table of a run: one row per level, a column per branch, and what each
level cost. `lth status`, the model card and the plot all read it from here."""

from __future__ import annotations

from dataclasses import dataclass

from lth.api import RunStatus
from lth.api.branches import BRANCHES


def labels(status: RunStatus) -> dict[str, str]:
    """What each branch is called: a transfer run compares its ticket with controls on the target."""
    if status.ticket is not None:
        ordered = sorted(BRANCHES.items(), key=lambda item: item[1].transfer_column)
        return {name: branch.transfer_label for name, branch in ordered}
    return {name: branch.label for name, branch in BRANCHES.items()}


@dataclass(frozen=True)
class Row:
    level: int
    density: float
    top1: dict[str, float]
    """top-1 by branch (main, random-reinit, random-prune), where finished"""


def rows(status: RunStatus) -> list[Row]:
    """One row per level, with each branch's top-1."""
    by_level: dict[int, Row] = {}
    for entry in sorted(status.levels, key=lambda e: e.level):
        row = by_level.setdefault(entry.level, Row(entry.level, entry.density or 0.0, {}))
        if entry.top1 is not None:
            row.top1[entry.branch] = entry.top1
        if entry.branch == "main" and entry.density is not None:
            by_level[entry.level] = Row(entry.level, entry.density, row.top1)
    return [by_level[level] for level in sorted(by_level)]


def branches(status: RunStatus) -> list[str]:
    present = {e.branch for e in status.levels}
    return [b for b in labels(status) if b in present]


def markdown_table(status: RunStatus) -> str:
    """The table as Markdown: level, density, then top-1 per branch, and what the level cost."""
    columns = branches(status)
    names = labels(status)
    header = "| level | density | " + " | ".join(f"top-1 {names[b]}" for b in columns)
    header += " | cost, dense-run equivalents (controls apart) |"
    lines = [header, "|" + " --- |" * (3 + len(columns))]
    for row in rows(status):
        cells = [f"{row.top1[b]:.2f}" if b in row.top1 else "" for b in columns]
        cells.append(level_cost_cell(status, row.level))
        lines.append(
            f"| {row.level}{search_note(status, row.level)} | {row.density * 100:.2f}% | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def search_note(status: RunStatus, level: int) -> str:
    """' (search)' on a search level (gradual, short-imp): its network is not a ticket."""
    spec = status.accepted_spec
    if spec is None or level == 0 or spec.pruning.is_ticket_level(level):
        return ""
    return " (search)"


def level_cost_cell(status: RunStatus, level: int) -> str:
    main = sum(
        e.cost for e in status.levels if e.level == level and e.branch == "main" and e.cost is not None
    )
    controls = sum(
        e.cost for e in status.levels if e.level == level and e.branch != "main" and e.cost is not None
    )
    return f"{main:.2f}" + (f" (+{controls:.2f})" if controls else "")


STABILITY_COLUMNS = ("k, epochs", "step", "instability, points", "error at the ends", "stable", "cost")
"""The instability analysis' table (rewindTo auto): one row per measured rewind point."""


def stability_rows(status: RunStatus) -> list[list[str]]:
    """The measured points of the instability analysis, by k; the chosen one marked."""
    stability = status.stability
    if stability is None:
        return []
    chosen = stability.chosen.point if stability.chosen is not None else None
    rows = []
    for m in stability.points:
        stable = "" if m.stable is None else ("yes" if m.stable else "no")
        rows.append(
            [
                f"{m.epochs:g}" + (" (chosen)" if m.point == chosen else ""),
                "" if m.step is None else str(m.step),
                "" if m.instability is None else f"{m.instability:.2f}",
                "" if m.endpoint_error is None else f"{m.endpoint_error:.2f}%",
                stable,
                "" if m.cost is None else f"{m.cost:.2f}",
            ]
        )
    return rows


def stability_summary(status: RunStatus) -> str | None:
    """One line: the chosen rewind point and why, the threshold and what the analysis cost."""
    stability = status.stability
    if stability is None:
        return None
    cost = f"{stability.cost:.2f} dense-run equivalents"
    if stability.chosen is None:
        threshold = f"threshold {stability.threshold:g} points"
        return f"rewindTo auto: instability analysis running ({threshold}, {cost} so far)"
    chosen = stability.chosen
    step = f", step {chosen.step}" if chosen.step is not None else ""
    return (
        f"rewindTo auto: rewind point {chosen.rewind_to}{step}, {chosen.reason} (instability at most "
        f"{stability.threshold:g} points); the analysis measured {len(stability.points)} of "
        f"{len(stability.ladder)} candidate points for {cost}"
    )


def stability_markdown(status: RunStatus) -> str:
    """The instability analysis' table as Markdown (empty without one)."""
    rows = stability_rows(status)
    if not rows:
        return ""
    lines = ["| " + " | ".join(STABILITY_COLUMNS) + " |", "|" + " --- |" * len(STABILITY_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
