"""The exported ticket (ticket/): the best level's mask and weights, ticket.json, the spec, the
model card and the plot; `lth run` writes it when a search ends, the export Job on a cluster."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from lth.api import RunStatus, StabilityStatus
from lth.api.data_manifest import DataManifest
from lth.api.naming import (
    CURVES_FILE,
    MASK_FILE,
    MODEL_CARD_FILE,
    PLOT_FILE,
    REWIND_FILE,
    SPEC_FILE,
    STABILITY_PLOT_FILE,
    TICKET_FILE,
    RunLayout,
)
from lth.results.curves import learning_curves
from lth.results.model_card import model_card
from lth.results.plot import plot, stability_plot
from lth.storage.files import atomic_write_text
from lth.storage.tickets import TicketFiles, describe

RESULT_FIELDS = {"level", "branch", "density", "top1", "top5", "loss", "cost"}
"""What ticket.json records of each finished level of the source run: what the levels computed
(and what each cost, in dense-run equivalents), not how long they took, so the same levels
export byte-identical files wherever they ran (`lth run` here, the export Job on a cluster)."""


def rewind_point(stability: StabilityStatus) -> dict[str, object]:
    """rewindTo auto in ticket.json: the point chosen, why, and the measured table (not the
    jobs' times, so the same analysis exports the same bytes wherever it ran)."""
    chosen = stability.chosen
    return {
        "chosenBy": "instability analysis (Frankle et al. 2020)",
        **(chosen.to_wire() if chosen is not None else {}),
        "threshold": stability.threshold,
        "density": stability.density,
        "ladder": stability.ladder,
        "points": [point.to_wire() for point in stability.points],
        "cost": stability.cost,
    }


def write_report(run_dir: Path, status: RunStatus) -> Path:
    """ticket/: the best mask, the rewind weights, ticket.json, the spec, the model card, the
    accuracy plot and the learning curves."""
    ticket = RunLayout(run_dir).ticket
    ticket.mkdir(parents=True, exist_ok=True)
    plot(status, ticket / PLOT_FILE)
    stability_plot(status, ticket / STABILITY_PLOT_FILE)
    learning_curves(status, run_dir, ticket / CURVES_FILE)
    spec = status.accepted_spec
    # The public form: spec.json and ticket.json are uploaded, and may be published.
    public = spec.to_public_wire() if spec else {}
    atomic_write_text(ticket / SPEC_FILE, json.dumps(public, indent=2) + "\n")
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
            "spec": public,
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
        if status.stability is not None:
            source_info["rewindPoint"] = rewind_point(status.stability)
        if (ticket / MASK_FILE).exists() and (ticket / REWIND_FILE).exists():
            described = describe(ticket, source_info)
            atomic_write_text(ticket / TICKET_FILE, json.dumps(described, indent=2) + "\n")
    atomic_write_text(ticket / MODEL_CARD_FILE, model_card(status, run_dir.name))
    return ticket
