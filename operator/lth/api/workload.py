"""The workloads' side of the contract: their command lines, how they end, and their progress.

The command lines of the Spark job and the trainer are built from the spec in one place: the
manifest builders put them in pod specs and the local runner executes them, so what runs on
one machine is what runs on the cluster. A workload exits EXIT_BAD_INPUT on bad input and
says why in its termination message; the trainer prints one `lth-progress {json}` line per
evaluated epoch, which the operator reads off the master pod's log tail once per resync
period (as Katib's stdout metrics collector reads a trial's) and the local runner off the
level's log file.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lth.api import (
    LOADER_PREFETCH_BATCHES,
    Branch,
    EpochProgress,
    RunSpec,
    RunStatus,
    StabilityPart,
    TicketStatus,
)
from lth.api.naming import DATA_DIR, RUNS_DIR, RunLayout
from lth.api.wire import redact

SPARK_MODULE = "lth_spark"
TRAINER_MODULE = "lth_trainer"
SPARK_MAIN_IN_IMAGE = "local:///opt/lth/lth_spark/__main__.py"
"""Where the Spark image keeps the job's entry file (spark-submit wants a file, not -m)."""
TERMINATION_LOG = "/dev/termination-log"
EXIT_BAD_INPUT = 2
"""How both workloads exit on bad input (argparse's usage-error code, a missing or corrupt
file, a spec the data does not fit): the same input fails again, so it is not retried."""
BAD_INPUT = "bad input: "
"""How a workload's termination message starts when it failed on its input: torchrun
exits 1 whatever its workers' codes were, so executors read this instead."""
TERMINATION_LIMIT = 4096
"""Kubernetes keeps at most 4 KiB of a container's termination message."""


def write_termination_log(path: str, message: str) -> None:
    """The container's termination message, without credentials (it becomes the run's conditions
    and events); best effort (a path that is not writable is no error)."""
    try:
        with open(path, "w") as f:
            f.write(redact(message)[:TERMINATION_LIMIT])
    except OSError:
        pass


def run_dir(storage_root: str, run_name: str) -> str:
    """A run's directory on the storage: runs/<name>."""
    return posixpath.join(storage_root, RUNS_DIR, run_name)


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files are: the storage root (the volume's mount, or a local folder)."""

    storage_root: str
    run_name: str

    @property
    def run_dir(self) -> str:
        return run_dir(self.storage_root, self.run_name)

    @property
    def layout(self) -> RunLayout:
        """The run directory's files, where this process sees the storage root."""
        return RunLayout(Path(self.run_dir))

    def resolve(self, path: str) -> str:
        """A path from the spec: absolute, or relative to the storage root."""
        return posixpath.normpath(posixpath.join(self.storage_root, path))

    def input_path(self, spec: RunSpec) -> str:
        return self.resolve(spec.dataset.path)

    def data_dir(self, spec: RunSpec) -> str:
        """The shards the trainer reads: prepared ones in place, else the run's data/."""
        if spec.dataset.format == "prepared":
            return self.input_path(spec)
        return posixpath.join(self.run_dir, DATA_DIR)


def spec_json(spec: RunSpec) -> str:
    """The spec as the workloads receive it: compact JSON of its public wire form (a command
    line is visible to anyone who lists the node's processes, and no workload reads
    resources.env, which reaches the pods as their environment)."""
    return json.dumps(spec.to_public_wire(), separators=(",", ":"), sort_keys=True)


def prep_arguments(spec: RunSpec, paths: RunPaths, termination_log: str | None = None) -> list[str]:
    """Arguments of the Spark job (`python -m lth_spark ...`, or spark-submit's main file);
    on a cluster, the driver's termination message says why it failed on bad input."""
    return [
        "--input",
        paths.input_path(spec),
        "--output",
        paths.data_dir(spec),
        *(["--termination-log", termination_log] if termination_log else []),
        "--spec-json",
        spec_json(spec),
    ]


def ticket_arguments(ticket: TicketStatus | None, paths: RunPaths) -> list[str]:
    """Where a transfer run's trainer reads the ticket: the source run's levels, a directory, a URL."""
    if ticket is None:
        return []
    if ticket.run is not None:
        assert ticket.level is not None, "the planner resolves the source level"
        return [
            "--ticket-run-dir",
            run_dir(paths.storage_root, ticket.run),
            "--ticket-level",
            str(ticket.level),
        ]
    if ticket.url is not None:
        return ["--ticket-url", ticket.url]
    assert ticket.path is not None
    return ["--ticket-dir", paths.resolve(ticket.path)]


def chosen_rewind(status: RunStatus | None, level: int) -> str | None:
    """rewindTo auto: the rewind point the instability analysis chose, for a pruned level's
    trainer (--rewind-to); None for level 0 and for a set rewind point."""
    stability = status.stability if status is not None else None
    if level == 0 or stability is None or stability.chosen is None:
        return None
    return stability.chosen.rewind_to


def trainer_arguments(
    spec: RunSpec,
    paths: RunPaths,
    level: int,
    branch: Branch,
    termination_log: str = TERMINATION_LOG,
    ticket: TicketStatus | None = None,
    rewind_to: str | None = None,
) -> list[str]:
    """Arguments of one level of the trainer (`torchrun ... -m lth_trainer ...`); `ticket` is
    the transferred ticket as the planner resolved it (status.ticket), `rewind_to` the point
    the instability analysis chose (rewindTo auto: `chosen_rewind`)."""
    return [
        *ticket_arguments(ticket, paths),
        *(["--rewind-to", rewind_to] if rewind_to is not None else []),
        "--run-dir",
        paths.run_dir,
        "--data",
        paths.data_dir(spec),
        "--level",
        str(level),
        "--branch",
        branch,
        "--termination-log",
        termination_log,
        "--spec-json",
        spec_json(spec),
    ]


def stability_arguments(
    spec: RunSpec,
    paths: RunPaths,
    point: int,
    part: StabilityPart,
    termination_log: str = TERMINATION_LOG,
) -> list[str]:
    """Arguments of one job of the instability analysis (rewindTo auto): a copy that trains
    from ladder point `point` (a, b), or the linear path between the two copies (path)."""
    return [
        "--run-dir",
        paths.run_dir,
        "--data",
        paths.data_dir(spec),
        "--stability-point",
        str(point),
        "--stability-part",
        part,
        "--termination-log",
        termination_log,
        "--spec-json",
        spec_json(spec),
    ]


# --------------------------------------------------------------------------- progress

PROGRESS_PREFIX = "lth-progress "
PROGRESS_TAIL_LINES = 50
"""Log lines read per running level: a few epoch lines among warnings and the loader's output."""


def epoch_line(record: dict[str, Any]) -> str:
    """The line the trainer prints for one epoch (level, branch, epoch, epochs, top1,
    imagesPerSecond, time: seconds since the epoch, etaSeconds: to the level's end)."""
    return PROGRESS_PREFIX + json.dumps(record, separators=(",", ":"))


def latest_epoch(log: str, level: int, branch: str) -> EpochProgress | None:
    """The last epoch line of `level`/`branch` in a log tail; None when it holds none."""
    for text in reversed(log.splitlines()):
        at = text.find(PROGRESS_PREFIX)
        if at < 0:
            continue
        try:
            record = json.loads(text[at + len(PROGRESS_PREFIX) :])
            if record.get("level") != level or record.get("branch") != branch:
                continue
            finish = None
            if record.get("time") is not None and record.get("etaSeconds") is not None:
                when = datetime.fromtimestamp(float(record["time"]), UTC)
                finish = (when + timedelta(seconds=float(record["etaSeconds"]))).replace(microsecond=0)
            top1 = record.get("top1")
            rate = record.get("imagesPerSecond")
            return EpochProgress(
                epoch=int(record["epoch"]),
                epochs=int(record["epochs"]),
                top1=None if top1 is None else round(float(top1), 2),
                images_per_second=None if rate is None else round(float(rate), 1),
                estimated_finish=finish,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # a torn or foreign line: look further back
    return None


def epoch_summary(level: int, progress: EpochProgress | None) -> str:
    """The Progress printer column: 'L7 37/90' (level 7, epoch 37 of 90), or 'L7' before its first epoch."""
    return f"L{level} {progress.epoch}/{progress.epochs}" if progress else f"L{level}"


# --------------------------------------------------------------------------- shared memory


def shm_need_bytes(spec: RunSpec) -> int:
    """/dev/shm one trainer pod needs for its data loaders at most: every worker keeps
    LOADER_PREFETCH_BATCHES uint8 batches ready, of the stored images in training (the device
    crops them) and of the center crops in evaluation, and the training loader lives on while an
    evaluation loader runs. Per process, for every process of the pod."""
    training = spec.training
    if training.workers == 0:
        return 0
    local_batch = training.batch_size // max(spec.resources.world_size, 1)
    height, width = largest_training_crop(spec)
    crop = default_crop_size(spec)
    per_image = 3 * (height * width + crop * crop)
    per_process = training.workers * LOADER_PREFETCH_BATCHES * local_batch * per_image
    return per_process * spec.resources.processes_per_pod


def default_crop_size(spec: RunSpec) -> int:
    """The trainer's crop (lth_trainer.data.crops.default_crop, from the spec instead of the
    manifest): 87.5 % of the short side of center-cropped and whole images, else the image."""
    dataset = spec.dataset
    if dataset.resize == "squash":
        return spec.training.crop_size or dataset.image_size
    stored = dataset.crop_short_side if dataset.resize == "whole" else dataset.image_size
    return spec.training.crop_size or min(stored, round(0.875 * dataset.crop_short_side))


def largest_training_crop(spec: RunSpec) -> tuple[int, int]:
    """Rows x columns a training sample takes in a batch at most: the stored square, or for
    whole images their largest crop (short side x 4/3 of it, aspect at most 4/3, and its
    repeated edge row and column; a smaller DCT scale only shrinks it)."""
    dataset = spec.dataset
    if dataset.resize != "whole":
        return dataset.image_size, dataset.image_size
    short = dataset.crop_short_side
    return short + 1, min(dataset.long_side_cap, math.ceil(short * 4 / 3) + 1) + 1
