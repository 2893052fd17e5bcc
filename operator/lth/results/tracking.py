"""The end of a search in MLflow (spec.tracking.mlflow): every level's run given the epochs it
lacks (what the trainers could not send while the server was down), the exported ticket and
report logged to the parent run as `ticket/`, the search's outcome as the parent's metrics.

A server that does not answer fails nothing: `lth report` says so in one line and the export
goes on, its ticket on the volume (and at spec.export.url) as always.
"""

from __future__ import annotations

from pathlib import Path

from lth.api import RunStatus


def outcome_metrics(status: RunStatus) -> dict[str, float]:
    """The parent run's metrics: the best ticket and the dense network it matched."""
    metrics: dict[str, float] = {}
    if status.dense_top1 is not None:
        metrics["dense/top1"] = status.dense_top1
    best = status.best
    if best is not None:
        metrics.update({"best/top1": best.top1, "best/density": best.density, "best/level": best.level})
    return metrics


def log_to_mlflow(run_dir: Path, status: RunStatus, ticket: Path) -> str | None:
    """One line on what went to MLflow, or why nothing did; None when the run names no server."""
    spec = status.accepted_spec
    settings = spec.tracking.mlflow if spec is not None else None
    if spec is None or settings is None:
        return None
    from lth.storage.tracking import MlflowRuns, one_line, sync_levels

    where = f"MLflow at {settings.tracking_uri}"
    try:
        runs = MlflowRuns(settings, run_dir, spec)
        sent = sync_levels(runs, [(row.level, row.branch) for row in status.levels])
        runs.log_report(ticket, outcome_metrics(status), status.phase == "Succeeded")
        _, parent = runs.parent()
    except ImportError as error:
        return f"{where}: not logged ({error}; install mlflow-skinny)"
    except Exception as error:  # the server's trouble: the export itself is done
        return f"{where}: not logged ({one_line(error)}); the ticket and report are in {ticket}"
    logged = f"{where}: ticket and report logged to run {parent} of experiment {settings.experiment_name!r}"
    return logged + (f", with {sent} epoch{'s' if sent != 1 else ''} the levels had not sent" if sent else "")
