"""The exported ticket's README.md: what the ticket is, how it was found, the table."""

from __future__ import annotations

from lth.api import RunStatus
from lth.api.naming import STABILITY_PLOT_FILE
from lth.plan.cost import describe as describe_cost
from lth.results.tables import markdown_table, stability_markdown, stability_summary


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
        chosen = status.stability.chosen if status.stability is not None else None
        rewind = f"auto: {chosen.rewind_to}" if chosen is not None else pruning.rewind_to
        lines += [
            f"- architecture: {spec.model.arch}; pruning: {pruning.strategy}, "
            f"{pruning.fraction} of the remaining weights per level, rewind to "
            f"{rewind} ({pruning.rewind} rewinding)",
            f"- search: {pruning.search.method} ({pruning.method.words})".replace(
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
        "## Learning curves",
        "",
        "Top-1 after each epoch of every level (the controls dashed); the curves of each level and "
        "branch are also in the run's TensorBoard files (`runs/<name>/tensorboard/`).",
        "",
        "![learning curves](learning-curves.png)",
        "",
    ]
    summary = stability_summary(status)
    if summary is not None:
        lines += [
            "## Rewind point: instability analysis",
            "",
            f"{summary}. Two copies trained from each measured point k with different data orders; "
            "the instability is the largest top-1 error on the straight line between them minus the "
            "mean of its ends' (Frankle et al. 2020, \"Linear Mode Connectivity and the Lottery "
            'Ticket Hypothesis").',
            "",
            stability_markdown(status),
            "",
            f"![instability against k]({STABILITY_PLOT_FILE})",
            "",
        ]
    return "\n".join(lines)
