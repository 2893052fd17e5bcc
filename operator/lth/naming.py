"""Names of a run's children and files: one place, so the operator, the local
runner, the trainer and the Spark job agree on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lth.api import Branch
from lth.branches import BRANCHES

DNS1035_MAX = 63

MASK_FILE = "mask.safetensors"
REWIND_FILE = "rewind.safetensors"
FINAL_FILE = "final.safetensors"
PROGRESS_FILE = "progress.jsonl"
"""One JSON line per finished epoch of a level (epoch, epochs, top1, imagesPerSecond, ...)."""
RESULT_FILE = "result.json"
MANIFEST_FILE = "manifest.json"
"""The data manifest (lth.data_manifest), written last by the Spark job: data/ is complete."""
STATUS_FILE = "status.json"


def prep_name(run: str) -> str:
    """The SparkApplication that preprocesses the run's data."""
    return f"{run}-prep"


def level_job_name(run: str, level: int, branch: Branch = "main") -> str:
    """The PyTorchJob of one level (and branch)."""
    return f"{run}-level-{level:02d}{BRANCHES[branch].suffix}"


def derived_names(run: str, max_level: int, pods: int, branches: list[Branch]) -> list[str]:
    """Every name the cluster derives from the run's name, longest last.

    The training operator names a Service after each replica (`<job>-worker-N`),
    the Spark operator its UI Service (`<app>-ui-svc`); Services must be
    DNS-1035 labels of 63 characters at most, so these bound the run's name.
    """
    names = [prep_name(run) + "-ui-svc"]
    for branch in ["main", *branches]:
        job = level_job_name(run, max_level, branch)
        names.append(f"{job}-master-0")
        if pods > 1:
            names.append(f"{job}-worker-{pods - 2}")
    return sorted(names, key=len)


@dataclass(frozen=True)
class RunLayout:
    """The run directory: data/, levels/NN[-branch]/, ticket/."""

    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    @property
    def status_file(self) -> Path:
        """The local runner's record of the run's status (the API server's, on a cluster)."""
        return self.root / STATUS_FILE

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def manifest(self) -> Path:
        return self.data / MANIFEST_FILE

    def level_dir(self, level: int, branch: Branch = "main") -> Path:
        return self.root / "levels" / f"{level:02d}{BRANCHES[branch].suffix}"

    def result_file(self, level: int, branch: Branch = "main") -> Path:
        return self.level_dir(level, branch) / RESULT_FILE

    @property
    def ticket(self) -> Path:
        return self.root / "ticket"

    @property
    def source_ticket(self) -> Path:
        """Where a transfer run keeps the ticket it downloaded (spec.ticket.url)."""
        return self.root / "source-ticket"
