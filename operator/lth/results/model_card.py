"""The exported ticket's README.md: what the ticket is, how it was found, the table."""

from __future__ import annotations

from lth.api import RunStatus
from lth.plan.cost import describe as describe_cost
from lth.results.tables import markdown_table


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
    return "\n".join(lines)
