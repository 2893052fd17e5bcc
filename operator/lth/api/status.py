"""What the controller writes under `status:` of a LotteryTicketRun, and what a level reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from lth.api.branches import Branch
from lth.api.pruning import StabilityPart
from lth.api.spec import (
    RunSpec,
)
from lth.api.wire import (
    ApiModel,
    Fraction,
    Percent,
)

# --------------------------------------------------------------------------- status

Phase = Literal["Pending", "Preprocessing", "Training", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})

ChildPhase = Literal["Pending", "Running", "Retrying", "Succeeded", "Failed"]


ConditionType = Literal[
    "SpecAccepted", "PodsAdmissible", "TicketResolved", "Progressing", "Succeeded", "Failed", "Exported"
]
"""The run's conditions: the spec was accepted; its namespace's Pod Security level admits every
pod it will create (False: which pods it refuses, and the fixes); a transfer's ticket was found;
the run is moving (or why it waits); it ended with a ticket or the level budget; it failed; its
ticket and report were exported (False while the export Job runs, or when it failed for good)."""
AdmissionReason = Literal["PodSecurityAdmits", "PodSecurityRefuses"]
SpecReason = Literal["Accepted", "InvalidSpec", "FrozenFieldChanged"]
TicketReason = Literal["Resolved", "TicketNotFound", "TicketNotReady", "TicketMismatch", "TicketInvalid"]
StuckReason = Literal[
    "Unschedulable",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "CreateContainerConfigError",
    "WaitingForQueue",
    "NotManagedByKueue",
    "PodRefused",
    "QuotaExceeded",
    "ApiMissing",
    "RuntimeMissing",
    "ResourcesNotCreated",
]
"""Why a child or its pods cannot run (Progressing stays True with this reason while it lasts):
the scheduler's and the kubelet's reasons; a job waiting for its queue, or suspended for a
Kueue that does not manage its kind (or is not installed); a pod the API server refused
(Pod Security, a webhook, an invalid pod); a create over a ResourceQuota (retried); a child
kind the cluster does not serve (its operator is not installed; retried); a TrainJob whose
ClusterTrainingRuntime does not exist (retried), or whose JobSet Kubeflow Trainer could not
create (its `TrainJobResourcesCreationFailed` event)."""
ProgressReason = Literal["Preprocessing", "Training", "LevelsDone", "Succeeded", "Failed"] | StuckReason
SucceededReason = Literal["TicketFound", "LevelsDone"]
TicketRefusal = Literal["TicketNotFound", "TicketNotReady", "TicketMismatch", "TicketInvalid"]
FailureReason = (
    Literal[
        "InvalidSpec", "PreprocessingFailed", "LevelFailed", "StabilityFailed", "ChildDeleted", "ChildRefused"
    ]
    | TicketRefusal
)
ExportReason = Literal["Exporting", "Exported", "ExportFailed"]
ConditionReason = (
    SpecReason
    | AdmissionReason
    | TicketReason
    | ProgressReason
    | SucceededReason
    | FailureReason
    | ExportReason
)


class Condition(ApiModel):
    """A condition, as the Kubernetes API conventions define it."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class LevelResult(ApiModel):
    """What a finished level reports (result.json, termination message)."""

    level: int = Field(ge=0)
    branch: Branch = "main"
    density: Fraction
    top1: Percent
    top5: Percent | None = None
    loss: float | None = None
    epochs: int | None = Field(None, ge=0)
    images_per_second: float | None = Field(None, ge=0)
    duration_seconds: float | None = Field(None, ge=0)
    trained_epochs: float | None = Field(
        None,
        ge=0,
        description="Passes over the training split this job trained (from its start step to the end).",
    )


class StabilityResult(ApiModel):
    """What one job of the instability analysis reports (result.json, termination message): a
    copy trained from the rewind point, or the linear path between the two copies."""

    point: int = Field(ge=0, description="The rewind point's index in the ladder.")
    part: StabilityPart
    epochs: float = Field(ge=0, description="The rewind point k, in epochs.")
    step: int = Field(ge=0, description="The rewind point k, the optimizer step.")
    top1: Percent | None = Field(None, description="A copy's top-1 at the end of its training.")
    errors: list[Percent] | None = Field(
        None, description="The path's top-1 error (100 - top-1) at each evenly spaced point, copy a to b."
    )
    instability: float | None = Field(
        None, description="The path's largest error minus the mean of its ends' errors, points."
    )
    density: Fraction | None = None
    trained_epochs: float | None = Field(None, ge=0, description="Passes over the training split (a copy).")
    duration_seconds: float | None = Field(None, ge=0)


class ChildStatus(ApiModel):
    """One child (SparkApplication or PyTorchJob) as the run tracks it."""

    name: str
    phase: ChildPhase = "Pending"
    attempts: int = Field(1, ge=1, description="Attempt of the current child object, from 1.")
    start_time: datetime | None = None
    finish_time: datetime | None = None
    message: str | None = None


class EpochProgress(ApiModel):
    """Where a running level stands: its trainer's latest epoch line (`lth.progress`)."""

    epoch: int = Field(ge=0)
    epochs: int = Field(ge=1)
    top1: Percent | None = Field(None, description="Top-1 after that epoch.")
    images_per_second: float | None = Field(None, ge=0, description="Training throughput of that epoch.")
    estimated_finish: datetime | None = Field(
        None, description="When the level should end, at the pace of its epochs so far."
    )


class LevelStatus(ChildStatus):
    """One row of the per-level table."""

    level: int = Field(ge=0)
    branch: Branch = "main"
    density: Fraction | None = None
    top1: Percent | None = None
    top5: Percent | None = None
    loss: float | None = None
    duration_seconds: float | None = Field(None, ge=0)
    cost: float | None = Field(
        None, ge=0, description="What this job trained, in dense-run equivalents (lth.cost)."
    )
    progress: EpochProgress | None = Field(None, description="While it runs: its latest epoch.")


class StabilityJobStatus(ChildStatus):
    """One job of the instability analysis: a copy (a, b) or the path between them."""

    point: int = Field(ge=0)
    part: StabilityPart
    duration_seconds: float | None = Field(None, ge=0)
    cost: float | None = Field(None, ge=0, description="What it trained, in dense-run equivalents.")


class StabilityPoint(ApiModel):
    """One measured rewind point: a row of the instability table."""

    point: int = Field(ge=0, description="Its index in the ladder.")
    epochs: float = Field(ge=0, description="k, in epochs.")
    step: int | None = Field(None, ge=0, description="k, the optimizer step (once a job has run).")
    instability: float | None = Field(
        None, description="Points of top-1 error the path rises above its ends."
    )
    errors: list[Percent] | None = Field(None, description="Top-1 error along the path, copy a to b.")
    endpoint_error: Percent | None = Field(None, description="The mean of the two copies' errors.")
    stable: bool | None = Field(None, description="instability <= spec.pruning.stability.threshold.")
    cost: float | None = Field(None, ge=0, description="Both copies, in dense-run equivalents.")


class RewindChoice(ApiModel):
    """The rewind point the analysis chose: levels 1, 2, ... rewind to it."""

    point: int = Field(ge=0)
    epochs: float = Field(ge=0)
    step: int | None = Field(None, ge=0)
    rewind_to: str = Field(description="As spec.pruning.rewindTo would say it: 0, 0.5ep, 2ep.")
    instability: float | None = None
    reason: str = Field(description="Why this point: the earliest stable one, or none was stable.")


class StabilityStatus(ApiModel):
    """rewindTo auto: the instability analysis between level 0 and level 1."""

    ladder: list[float] = Field(description="The candidate points, epochs.")
    threshold: float
    density: Fraction
    points: list[StabilityPoint] = Field(default_factory=list, description="Measured points, by k.")
    jobs: list[StabilityJobStatus] = Field(default_factory=list)
    chosen: RewindChoice | None = None
    cost: float = Field(0.0, ge=0, description="Every finished copy, in dense-run equivalents.")

    def job(self, point: int, part: StabilityPart) -> StabilityJobStatus | None:
        return next((j for j in self.jobs if (j.point, j.part) == (point, part)), None)

    def measured(self, point: int) -> StabilityPoint | None:
        return next((m for m in self.points if m.point == point), None)


class ExportStatus(ChildStatus):
    """The export Job `<run>-export`: the ticket and report written after the search ended."""

    path: str | None = Field(None, description="The exported ticket directory, as the pods see it.")
    url: str | None = Field(None, description="Where it was uploaded (spec.export.url).")


class BestTicket(ApiModel):
    level: int = Field(ge=0)
    density: Fraction
    top1: Percent
    summary: str = Field(description="One line for kubectl, e.g. 'L7 21.0% 75.3%'.")


class CostStatus(ApiModel):
    """What the run trained, in dense-run equivalents: epochs x fraction of the training data,
    relative to one dense run of spec.training.epochs (lth.cost)."""

    search: float = Field(0.0, ge=0, description="Every main level: the search and its tickets' training.")
    controls: float = Field(0.0, ge=0, description="The control branches, shown apart.")
    stability: float | None = Field(
        None, ge=0, description="rewindTo auto: the instability analysis' copies (counted in ticket)."
    )
    ticket: float | None = Field(
        None,
        ge=0,
        description=(
            "What the best ticket took: the levels its mask comes from and its own full training, "
            "the dense level 0 and the instability analysis included, controls and other tickets not."
        ),
    )


class TicketStatus(ApiModel):
    """The transferred ticket, resolved once at start (a later change to its source does not matter)."""

    source: str = Field(description="What it is, in words: 'run digits-0to4 level 5' or 'directory ...'.")
    run: str | None = Field(None, description="The source run, for spec.ticket.run.")
    level: int | None = Field(None, ge=0, description="The source run's level.")
    path: str | None = Field(None, description="The ticket directory, for spec.ticket.path.")
    url: str | None = Field(None, description="The ticket's URL, for spec.ticket.url.")
    density: Fraction | None = Field(None, description="Density of the ticket (None: not known yet).")
    top1: Percent | None = Field(None, description="Top-1 of the ticket on its source data.")
    architecture: str | None = None


class RunStatus(ApiModel):
    """What the controller writes under `status:`; every field derives from the children."""

    phase: Phase = "Pending"
    level: int | None = Field(None, description="Current (highest started) main level.")
    density: Fraction | None = Field(None, description="Density of the current level.")
    top1: Percent | None = Field(None, description="Top-1 of the latest finished main level.")
    dense_top1: Percent | None = None
    best: BestTicket | None = None
    ticket: TicketStatus | None = Field(None, description="The transferred ticket (spec.ticket).")
    cost: CostStatus | None = Field(None, description="What the run trained, in dense-run equivalents.")
    preprocessing: ChildStatus | None = None
    levels: list[LevelStatus] = Field(default_factory=list)
    progress: str | None = Field(
        None, description="The running main level and its epoch, for kubectl: 'L7 37/90'."
    )
    stability: StabilityStatus | None = Field(
        None, description="rewindTo auto: the instability analysis and the rewind point it chose."
    )
    export: ExportStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    accepted_spec: RunSpec | None = Field(
        None, description="The spec as accepted at start; frozen fields are kept from it."
    )

    def to_public_wire(self) -> dict[str, Any]:
        """The wire form with the accepted spec as it may be shipped (`RunSpec.to_public_wire`)."""
        wire = self.to_wire()
        if self.accepted_spec is not None:
            wire["acceptedSpec"] = self.accepted_spec.to_public_wire()
        return wire

    def level_entry(self, level: int, branch: Branch = "main") -> LevelStatus | None:
        return next((e for e in self.levels if e.level == level and e.branch == branch), None)

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
