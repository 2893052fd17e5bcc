"""What the trackers record, and the run's MLflow runs: one parent per LotteryTicketRun, a
nested run per level and branch, the exported ticket logged to the parent.

The trainer (while a level trains) and `lth report` (at the end, when it also sends what a
level could not while the server was down) share this. The parent is found again by a key
that the run directory keeps (`tracking/mlflow-parent.json`), written before the server is
asked and searched for as the parent's tag, under a lock on the volume: levels that start
together, a reply lost on the way or a resumed level never make a second parent. A nested
run is found again by its tags, and gets only the epochs after the last step it holds, so a
resumed level sends no step twice. MLflow is imported only when a run asks for it; each call
is bounded by MLflow's own HTTP settings, set here where the environment says nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.api import Branch, MlflowSpec, RunSpec
from lth.api.naming import RunLayout, tracking_name
from lth.api.wire import redact
from lth.storage.files import atomic_write_text, read_progress
from lth.storage.lifetime import exclusive

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

EPOCH_METRICS = {
    "trainLoss": "train/loss",
    "lr": "train/lr",
    "imagesPerSecond": "train/images_per_second",
    "top1": "val/top1",
    "top5": "val/top5",
    "loss": "val/loss",
}
"""A progress.jsonl field, and its name in TensorBoard and MLflow."""

PARAM_SECTIONS = ("model", "training", "pruning")
"""The spec's hyperparameters, as the trackers record them (`training.lr`, `pruning.fraction`, ...)."""

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
"""MLflow's defaults retry for minutes (7 retries, 120 s each); these bound a call to about 35 s.
spec.resources.env (or the environment of `lth run`) overrides each."""

PARENT_FILE = "mlflow-parent.json"
MAX_BATCH = 900
"""Metrics per log_batch call (MLflow takes at most 1000)."""


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """One progress.jsonl line as the trackers' metrics (fields it lacks, such as top5 under
    5 classes, are left out)."""
    return {tag: float(record[key]) for key, tag in EPOCH_METRICS.items() if record.get(key) is not None}


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, str | int | float | bool]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flat(f"{prefix}.{key}", inner)
    elif isinstance(value, list):
        yield prefix, json.dumps(value, separators=(",", ":"))
    else:
        yield prefix, value


def spec_params(spec: RunSpec) -> dict[str, str | int | float | bool]:
    """The run's hyperparameters: spec.model, training and pruning, flattened, and the data's form."""
    wire = spec.to_wire()
    params = dict(item for section in PARAM_SECTIONS for item in _flat(section, wire[section]))
    data = spec.dataset
    params.update(
        {"dataset.format": data.format, "dataset.imageSize": data.image_size, "dataset.resize": data.resize}
    )
    return params


def level_params(
    spec: RunSpec, level: int, branch: Branch, density: float, start_epoch: int
) -> dict[str, str | int | float | bool]:
    """One level's hyperparameters: the run's, and where this level starts."""
    return {
        "level": level,
        "branch": branch,
        "density": round(density, 6),
        "startEpoch": start_epoch,
        **spec_params(spec),
    }


def bounded_http() -> None:
    """MLflow's HTTP timeout and retries, bounded, unless the environment sets them; urllib3's
    line per retry silenced (whoever calls says once that the server does not answer)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


CAUSE = re.compile(r"\[Errno -?\d+\] [^'\")]+|Read timed out|Name or service not known")
"""The words that say why a call failed, deep inside the messages MLflow wraps around them."""


def one_line(error: BaseException) -> str:
    """An error as one short line: its cause where MLflow's message holds one, else its start;
    credentials a URL in it may carry shown as *** (lth.api.wire.redact)."""
    text = " ".join(redact(str(error)).split())
    cause = CAUSE.search(text)
    if cause is not None:
        return cause.group(0).strip()
    return (text[:200] + "...") if len(text) > 200 else text


@dataclass(frozen=True)
class TrackedLevel:
    """A level as MLflow records it: its name, parameters and where it started."""

    level: int
    branch: Branch
    params: dict[str, str | int | float | bool]
    density: float
    start_epoch: int
    start_time: float


class MlflowRuns:
    """The MLflow runs of one run directory (one LotteryTicketRun), over one client."""

    def __init__(self, settings: MlflowSpec, run_dir: Path, spec: RunSpec) -> None:
        bounded_http()
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.layout = RunLayout(run_dir)
        self.spec = spec
        self.client: MlflowClient = MlflowClient(tracking_uri=settings.tracking_uri)
        self._parent: tuple[str, str] | None = None
        self._nested: dict[tuple[int, str], str] = {}
        self._sent: dict[str, int] = {}

    @property
    def run_name(self) -> str:
        return self.layout.root.name

    def parent(self) -> tuple[str, str]:
        """(experiment id, run id) of the run's parent, found again or made once."""
        if self._parent is None:
            with exclusive(self.layout.tracking, "the MLflow parent run"):
                self._parent = self._find_or_make_parent()
        return self._parent

    def _find_or_make_parent(self) -> tuple[str, str]:
        path = self.layout.tracking / PARENT_FILE
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        where = {"trackingUri": self.settings.tracking_uri, "experiment": self.settings.experiment_name}
        if record.get("runId") and all(record.get(k) == v for k, v in where.items()):
            return str(record["experimentId"]), str(record["runId"])
        key = str(record.get("key") or uuid.uuid4().hex)
        atomic_write_text(path, json.dumps({"key": key}) + "\n")  # before the server is asked
        experiment = self._experiment()
        found = self.client.search_runs([experiment], f"tags.`lth.key` = '{key}'", max_results=1)
        if found:
            run_id = str(found[0].info.run_id)
        else:
            tags = {"lth.run": self.run_name, "lth.key": key}
            run_id = str(self.client.create_run(experiment, run_name=self.run_name, tags=tags).info.run_id)
            self._log_params(run_id, spec_params(self.spec))
        atomic_write_text(
            path, json.dumps({"key": key, **where, "experimentId": experiment, "runId": run_id}) + "\n"
        )
        return experiment, run_id

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:  # made by another run in between
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def _log_params(self, run_id: str, params: Mapping[str, str | int | float | bool]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for at in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[at : at + 100])

    def level_run(self, level: TrackedLevel) -> str:
        """The nested run of one level and branch, found again by its tags, or made with its
        parameters and starting density."""
        known = self._nested.get((level.level, level.branch))
        if known is not None:
            return known
        experiment, parent = self.parent()
        query = (
            f"tags.mlflow.parentRunId = '{parent}' and tags.`lth.level` = '{level.level}' "
            f"and tags.`lth.branch` = '{level.branch}'"
        )
        found = self.client.search_runs([experiment], query, max_results=1)
        if found:
            run_id = str(found[0].info.run_id)
            history = self.client.get_metric_history(run_id, EPOCH_METRICS["top1"])
            self._sent[run_id] = max((m.step for m in history), default=-1)
        else:
            tags = {
                "mlflow.parentRunId": parent,
                "lth.run": self.run_name,
                "lth.level": str(level.level),
                "lth.branch": level.branch,
            }
            name = tracking_name(level.level, level.branch)
            started = int(level.start_time * 1000)
            run_id = str(self.client.create_run(experiment, started, tags, name).info.run_id)
            self._log_params(run_id, level.params)
            self._log_metrics(run_id, [("density", level.density, level.start_time, level.start_epoch)])
            self._sent[run_id] = -1
        self._nested[(level.level, level.branch)] = run_id
        return run_id

    def sync_level(self, level: TrackedLevel, history: Sequence[Mapping[str, Any]], finished: bool) -> int:
        """Send the epochs of `history` that the level's run lacks (step: the global epoch), and
        end the run when the level is finished; how many epochs were sent."""
        run_id = self.level_run(level)
        new = [r for r in history if int(r["epoch"]) > self._sent[run_id]]
        self._log_metrics(
            run_id,
            [
                (tag, value, float(r["time"]), int(r["epoch"]))
                for r in new
                for tag, value in epoch_metrics(r).items()
            ],
        )
        if new:
            self._sent[run_id] = int(new[-1]["epoch"])
        if finished:
            self.client.set_terminated(run_id, "FINISHED")
        return len(new)

    def _log_metrics(self, run_id: str, points: Sequence[tuple[str, float, float, int]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, value, int(when * 1000), step) for key, value, when, step in points]
        for at in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[at : at + MAX_BATCH])

    def log_report(self, ticket_dir: Path, summary: Mapping[str, float], succeeded: bool) -> None:
        """The exported ticket and report as the parent's artifacts (`ticket/`), the search's
        outcome as its metrics, and the parent ended."""
        _, parent = self.parent()
        self.client.log_artifacts(parent, str(ticket_dir), artifact_path="ticket")
        now = time.time()
        self._log_metrics(parent, [(key, value, now, 0) for key, value in summary.items()])
        self.client.set_terminated(parent, "FINISHED" if succeeded else "FAILED")


def tracked_level(spec: RunSpec, layout: RunLayout, level: int, branch: Branch) -> TrackedLevel | None:
    """A level as its start.json describes it (as the trainer tracked it); None before it started."""
    start = layout.level(level, branch).start
    try:
        record = json.loads(start.read_text())
        density, epoch = float(record["density"]), int(record["step"]) // int(record["stepsPerEpoch"])
        when = start.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    return TrackedLevel(
        level, branch, level_params(spec, level, branch, density, epoch), density, epoch, when
    )


def sync_levels(runs: MlflowRuns, levels: Sequence[tuple[int, Branch]]) -> int:
    """Every epoch the levels' runs lack, from their progress.jsonl (what a level could not send
    while the server was down); finished levels' runs are ended. How many epochs were sent."""
    sent = 0
    for level, branch in levels:
        tracked = tracked_level(runs.spec, runs.layout, level, branch)
        files = runs.layout.level(level, branch)
        if tracked is not None:
            sent += runs.sync_level(tracked, read_progress(files.progress), files.result.is_file())
    return sent
