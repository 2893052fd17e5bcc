"""The command lines of the two workloads, built from the spec in one place.

The manifest builders put these in pod specs and the local runner executes
them, so what runs on one machine is what runs on the cluster.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from lth.api import Branch, RunSpec, TicketStatus
from lth.naming import DATA_DIR, RUNS_DIR, RunLayout

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
    """The container's termination message; best effort (a path that is not writable is no error)."""
    try:
        with open(path, "w") as f:
            f.write(message[:TERMINATION_LIMIT])
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
    """The spec as the workloads receive it: compact JSON of its wire form."""
    return json.dumps(spec.to_wire(), separators=(",", ":"), sort_keys=True)


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


def trainer_arguments(
    spec: RunSpec,
    paths: RunPaths,
    level: int,
    branch: Branch,
    termination_log: str = TERMINATION_LOG,
    ticket: TicketStatus | None = None,
) -> list[str]:
    """Arguments of one level of the trainer (`torchrun ... -m lth_trainer ...`); `ticket` is
    the transferred ticket as the planner resolved it (status.ticket)."""
    return [
        *ticket_arguments(ticket, paths),
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
