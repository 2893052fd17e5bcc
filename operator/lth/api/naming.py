"""Names of a run's children and files: one place, so the operator, the local
runner, the trainer and the Spark job agree on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lth.api import STABILITY_PARTS, Branch, RunSpec, StabilityPart
from lth.api.branches import BRANCHES

DNS1035_MAX = 63

RUNS_DIR = "runs"
"""Under the storage root (the volume's mount, or `lth run --root`): runs/<name>/."""
DATA_DIR = "data"
LEVELS_DIR = "levels"
TICKET_DIR = "ticket"
"""The exported ticket (`lth report`): mask, rewind and final weights, ticket.json, card, plot."""
SOURCE_TICKET_DIR = "source-ticket"
STABILITY_DIR = "stability"
"""rewindTo auto: the instability analysis' jobs, stability/PP-a, PP-b (the copies), PP-path."""
LOGS_DIR = "logs"
INDEX_DIR = "index"
"""The trainer's shard index, written once per run and read by every rank of every level."""
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files, a folder per level and branch: `tensorboard --logdir runs/<name>/tensorboard`."""
TRACKING_DIR = "tracking"
"""What the run's trackers need to find their runs again (the MLflow parent run's key and id)."""

SPEC_FILE = "spec.json"
TICKET_FILE = "ticket.json"
PLOT_FILE = "accuracy.png"
STABILITY_PLOT_FILE = "stability.png"
"""rewindTo auto: the instability against the rewind point k, and the error along each path."""
CURVES_FILE = "learning-curves.png"
"""Top-1 per epoch of every level and branch, beside accuracy.png in the exported report."""
MODEL_CARD_FILE = "README.md"
MASK_FILE = "mask.safetensors"
INIT_FILE = "init.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
START_FILE = "start.json"
REWIND_FILE = "rewind.safetensors"
FINAL_FILE = "final.safetensors"
REWIND_AT_FILE = "rewind-at-{step}.safetensors"
"""rewindTo auto: theta at each candidate point of the ladder, saved by level 0 (step k)."""
PROGRESS_FILE = "progress.jsonl"
"""One JSON line per finished epoch of a level (epoch, epochs, top1, imagesPerSecond, ...)."""
RESULT_FILE = "result.json"
SEARCH_MASK_FILE = "mask-for-{level:02d}.safetensors"
"""In the gradual search's level: the mask it had at the density of ticket level NN."""
MANIFEST_FILE = "manifest.json"
"""The data manifest (lth.api.data_manifest), written last by the Spark job: data/ is complete."""
STATUS_FILE = "status.json"


def prep_name(run: str) -> str:
    """The SparkApplication that preprocesses the run's data."""
    return f"{run}-prep"


def export_name(run: str) -> str:
    """The batch/v1 Job that writes (and uploads) the ticket and report once the search ended."""
    return f"{run}-export"


def tracking_name(level: int, branch: Branch) -> str:
    """A level's name in the trackers: its TensorBoard folder and its nested MLflow run (`07-main`)."""
    return f"{level:02d}-{branch}"


def level_job_name(run: str, level: int, branch: Branch = "main") -> str:
    """The PyTorchJob or TrainJob of one level (and branch)."""
    return f"{run}-level-{level:02d}{BRANCHES[branch].suffix}"


def stability_job_name(run: str, point: int, part: StabilityPart) -> str:
    """The training job of one part of the instability analysis at ladder point `point`."""
    return f"{run}-stability-{point:02d}-{part}"


TRAINJOB_REPLICATED_JOB = "node"
"""The replicatedJob (and container) of a TrainJob's nodes, as Trainer v2 names it
(`constants.Node`, kubeflow/trainer pkg/constants/constants.go)."""


def derived_names(run: str, spec: RunSpec) -> list[str]:
    """Every name the cluster derives from the run's name for this spec, longest last.

    The training operator names a Service after each replica (`<job>-worker-N`), the
    Spark operator its UI Service (`<app>-ui-svc`); Services must be DNS-1035 labels of 63
    characters at most. A TrainJob's JobSet names its pods `<job>-node-0-<index>-<5 random>`,
    and JobSet's webhook refuses one whose longest pod name would pass 63 (`podNameTooLongErrorMsg`,
    kubernetes-sigs/jobset v0.12.0 pkg/webhooks/jobset_webhook.go). These bound the run's name.
    """
    branches: list[Branch] = [*spec.pruning.controls.branches, *(spec.ticket.controls if spec.ticket else [])]
    pods, max_level = spec.resources.pods, spec.level_budget
    names = [prep_name(run) + "-ui-svc"]
    jobs = [level_job_name(run, max_level, branch) for branch in ["main", *branches]]
    if spec.pruning.auto_rewind:  # the instability analysis' jobs, at its last ladder point
        last = len(spec.pruning.stability.ladder(spec.training.epochs)) - 1
        jobs += [stability_job_name(run, last, part) for part in STABILITY_PARTS]
    for job in jobs:
        if spec.resources.level_kind == "TrainJob":
            names.append(f"{job}-{TRAINJOB_REPLICATED_JOB}-0-{pods - 1}-abcde")
            continue
        names.append(f"{job}-master-0")
        if pods > 1:
            names.append(f"{job}-worker-{pods - 2}")
    return sorted(names, key=len)


@dataclass(frozen=True)
class LevelLayout:
    """The files of levels/NN[-branch]/ (see the README's "Trainer" section)."""

    dir: Path

    @property
    def mask(self) -> Path:
        return self.dir / MASK_FILE

    @property
    def init(self) -> Path:
        return self.dir / INIT_FILE

    @property
    def rewind(self) -> Path:
        return self.dir / REWIND_FILE

    @property
    def final(self) -> Path:
        return self.dir / FINAL_FILE

    def rewind_at(self, step: int) -> Path:
        """rewindTo auto: theta at step `step`, a candidate point (level 0 writes one per point)."""
        return self.dir / REWIND_AT_FILE.format(step=step)

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT_FILE

    @property
    def start(self) -> Path:
        return self.dir / START_FILE

    @property
    def progress(self) -> Path:
        return self.dir / PROGRESS_FILE

    @property
    def result(self) -> Path:
        return self.dir / RESULT_FILE

    def mask_for(self, level: int) -> Path:
        """The gradual search's mask for ticket level `level` (lth.api.SearchSpec)."""
        return self.dir / SEARCH_MASK_FILE.format(level=level)


@dataclass(frozen=True)
class RunLayout:
    """The run directory: data/, levels/NN[-branch]/, ticket/."""

    root: Path

    @classmethod
    def relative(cls, run: str) -> RunLayout:
        """The run's directory relative to the storage root (runs/<name>): where it is on the volume."""
        return cls(Path(RUNS_DIR) / run)

    @property
    def spec_file(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def status_file(self) -> Path:
        """The local runner's record of the run's status (the API server's, on a cluster)."""
        return self.root / STATUS_FILE

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def manifest(self) -> Path:
        return self.data / MANIFEST_FILE

    def level(self, level: int, branch: Branch = "main") -> LevelLayout:
        return LevelLayout(self.level_dir(level, branch))

    def level_dir(self, level: int, branch: Branch = "main") -> Path:
        return self.root / LEVELS_DIR / f"{level:02d}{BRANCHES[branch].suffix}"

    def result_file(self, level: int, branch: Branch = "main") -> Path:
        return self.level(level, branch).result

    def stability(self, point: int, part: StabilityPart) -> LevelLayout:
        """The files of one job of the instability analysis (a copy's are a level's)."""
        return LevelLayout(self.root / STABILITY_DIR / f"{point:02d}-{part}")

    @property
    def logs(self) -> Path:
        """The local runner's child logs and termination messages."""
        return self.root / LOGS_DIR

    @property
    def index(self) -> Path:
        return self.root / INDEX_DIR

    @property
    def ticket(self) -> Path:
        return self.root / TICKET_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    def tensorboard_run(self, level: int, branch: Branch = "main") -> Path:
        """One level's event files: a run of its own in TensorBoard, named like its MLflow run."""
        return self.tensorboard / tracking_name(level, branch)

    @property
    def tracking(self) -> Path:
        return self.root / TRACKING_DIR

    @property
    def source_ticket(self) -> Path:
        """Where a transfer run keeps the ticket it downloaded (spec.ticket.url)."""
        return self.root / SOURCE_TICKET_DIR
