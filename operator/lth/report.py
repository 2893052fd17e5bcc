"""The accuracy-vs-density report of a run, its plot, and the exported ticket."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lth.api import RunStatus
from lth.branches import BRANCHES
from lth.cost import describe as describe_cost
from lth.data_manifest import DataManifest
from lth.files import atomic_write, atomic_write_text
from lth.naming import MASK_FILE, MODEL_CARD_FILE, PLOT_FILE, REWIND_FILE, SPEC_FILE, TICKET_FILE, RunLayout
from lth.ticket import TicketFiles, describe


def labels(status: RunStatus) -> dict[str, str]:
    """What each branch is called: a transfer run compares its ticket with controls on the target."""
    if status.ticket is not None:
        ordered = sorted(BRANCHES.items(), key=lambda item: item[1].transfer_column)
        return {name: branch.transfer_label for name, branch in ordered}
    return {name: branch.label for name, branch in BRANCHES.items()}


RESULT_FIELDS = {"level", "branch", "density", "top1", "top5", "loss", "cost"}
"""What ticket.json records of each finished level of the source run: what the levels computed
(and what each cost, in dense-run equivalents), not how long they took, so the same levels
export byte-identical files wherever they ran (`lth run` here, the export Job on a cluster)."""


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


SEARCH_WORDS = {
    "imp": "one full training per level",
    "gradual": "one run of N epochs that prunes as it trains, then one full training per ticket "
    "from the rewind point",
    "short-imp": "short levels of N epochs each, then one full training per ticket from the rewind point",
}
"""What each spec.pruning.search.method does, in the model card's words."""


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


def model_card(status: RunStatus, run_name: str) -> str:
    best = status.best
    lines = [f"# Lottery ticket of run `{run_name}`", ""]
    transfer = status.ticket
    if transfer is not None:
        source_top1 = f", top-1 {transfer.top1:.2f}% on its own data" if transfer.top1 is not None else ""
        lines += [
            f"Transfer run: the ticket of {transfer.source}{source_top1}, trained on this run's data "
            "beside the controls below.",
            "",
        ]
    if best is not None:
        lines += [
            f"- best ticket: level {best.level}, {best.density * 100:.2f}% of the prunable weights "
            f"remain, top-1 {best.top1:.2f}%",
            f"- dense network ({'dense control' if transfer else 'level 0'}): top-1 {status.dense_top1:.2f}%",
            "",
        ]
    spec = status.accepted_spec
    if spec is not None:
        pruning = spec.pruning
        lines += [
            f"- architecture: {spec.model.arch}; pruning: {pruning.strategy}, "
            f"{pruning.fraction} of the remaining weights per level, rewind to "
            f"{pruning.rewind_to} ({pruning.rewind} rewinding)",
            f"- search: {pruning.search.method} ({SEARCH_WORDS[pruning.search.method]})".replace(
                "N epochs", f"{pruning.search.epochs} epochs"
            ),
            "",
        ]
    if status.cost is not None:
        lines += [f"- {describe_cost(status.cost, spec)}", ""]
    lines += [
        "## Accuracy vs density",
        "",
        markdown_table(status),
        "",
        "![accuracy vs density](accuracy.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(run_dir: Path, status: RunStatus) -> Path:
    """ticket/: the best mask, the rewind weights, ticket.json, the spec, the model card, the plot."""
    ticket = RunLayout(run_dir).ticket
    ticket.mkdir(parents=True, exist_ok=True)
    plot(status, ticket / PLOT_FILE)
    spec = status.accepted_spec
    atomic_write_text(ticket / SPEC_FILE, json.dumps(spec.to_wire() if spec else {}, indent=2) + "\n")
    if status.best is not None:
        best = status.best
        files = TicketFiles.from_run(run_dir, best.level)
        for source in (files.mask, files.rewind, files.final):
            if source.exists():
                shutil.copy2(source, ticket / source.name)
        classes = spec.model.num_classes if spec else None
        # Prepared data elsewhere, or none: the spec's count (if any) stands.
        with contextlib.suppress(OSError, ValueError):
            classes = DataManifest.load(RunLayout(run_dir).manifest).num_classes
        source_info = {
            "run": run_dir.name,
            "level": best.level,
            "architecture": spec.model.arch if spec else None,
            "numClasses": classes,
            "top1": best.top1,
            "denseTop1": status.dense_top1,
            "spec": spec.to_wire() if spec else {},
            "results": [
                row.model_dump(mode="json", by_alias=True, include=RESULT_FIELDS, exclude_none=True)
                for row in status.levels
                if row.phase == "Succeeded"
            ],
        }
        if status.ticket is not None:
            source_info["transferredFrom"] = status.ticket.to_wire()
        if status.cost is not None:
            source_info["cost"] = {"unit": "dense-run equivalents", **status.cost.to_wire()}
        if (ticket / MASK_FILE).exists() and (ticket / REWIND_FILE).exists():
            described = describe(ticket, source_info)
            atomic_write_text(ticket / TICKET_FILE, json.dumps(described, indent=2) + "\n")
    atomic_write_text(ticket / MODEL_CARD_FILE, model_card(status, run_dir.name))
    return ticket
