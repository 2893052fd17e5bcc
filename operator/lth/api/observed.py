"""What an executor sees of a run's children and of a transfer's source, for the planner.

The kopf handlers translate the cluster's objects into these (the kinds' `observe_*` in `lth.cluster`),
the local runner its run directory; `lth.storage.tickets` reads a ticket directory into an
`ObservedSource`. Nothing here decides anything: the planner does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lth.api import EpochProgress, LevelResult, RunStatus, StabilityResult, StuckReason, TrainingApi
from lth.api.wire import redact

TRAINING_APIS: tuple[TrainingApi, ...] = ("PyTorchJob", "TrainJob")
ChildKind = Literal["SparkApplication", "Job"] | TrainingApi
"""The run's children: its preprocessing, its levels, and the export Job (batch/v1)."""
ChildState = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped", "Refused"]
"""Stopped: recorded and unfinished, but nothing runs it (the local runner was restarted); it is
created again at the same attempt, a restart that resumes from its checkpoints, not a retry.
Refused: the API server refused to create it in this pass (a 4xx other than 409, with its
message): retried at the same attempt when `retryable` (a quota, an API not served yet), else
the run fails naming the child and the server's words."""


@dataclass(frozen=True)
class Stuck:
    """Why a Pending or Running child makes no progress: a pod the scheduler cannot place, a
    container the kubelet cannot pull or start, a pod the API server refused, a job waiting
    for its queue. Nothing here fails or retries the child: it waits, and the run says why
    (`lth.cluster.pods` reads it off the child's pods and events)."""

    reason: StuckReason
    """The Progressing condition's reason while it lasts, and the Warning event's:
    Unschedulable, ImagePullBackOff (ErrImagePull too: the kubelet alternates the two while it
    retries), ErrImageNeverPull, InvalidImageName, ImageInspectError, CreateContainerConfigError,
    WaitingForQueue, NotManagedByKueue, PodRefused, QuotaExceeded, ApiMissing."""
    subject: str
    """What is stuck: 'pod P', 'pod P container C', 'pod P init container C', or a child:
    'PyTorchJob J', 'TrainJob J'."""
    detail: str
    """Upstream's own words: the scheduler's or the kubelet's message, or the queue's name
    (credentials a URL in them carries are redacted: they become the status and events)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", redact(self.detail))

    @property
    def message(self) -> str:
        return f"{self.subject}: {self.reason}: {self.detail}"

    def described_by(self, message: str | None) -> bool:
        """Whether `message` (an earlier status) already told of this subject stuck for this
        reason: the detail may change (the kubelet's pull error and its back-off message)."""
        return (message or "").startswith(f"{self.subject}: {self.reason}: ")


@dataclass(frozen=True)
class ObservedChild:
    """A child as an executor sees it now (translated from the cluster or the run directory)."""

    name: str
    attempt: int
    state: ChildState
    message: str = ""
    result: LevelResult | StabilityResult | None = None
    """A finished training job's report: a level's, or an instability analysis job's."""
    deleting: bool = False
    retryable: bool = True
    """False when the workload said its input is bad (EXIT_BAD_INPUT): the same input fails again."""
    stuck: Stuck | None = None
    """Why the child, Pending or Running, makes no progress; None when nothing holds it."""
    progress: EpochProgress | None = None
    """A running level's latest epoch line (`lth.progress`); None when not read in this pass."""

    def __post_init__(self) -> None:
        """A child's message (its termination message, the log's tail) becomes the run's status
        and events: no credential it may quote goes with it."""
        object.__setattr__(self, "message", redact(self.message))


@dataclass(frozen=True)
class ObservedSource:
    """What an executor found where spec.ticket points.

    For spec.ticket.run: whether the run exists, its status and accepted spec. For
    spec.ticket.path: ticket.json (its checksums verified), or the problem that kept
    it from being read. An executor that cannot look (an operator without the volume)
    passes no source, and the trainer checks the directory instead.
    """

    found: bool
    status: RunStatus | None = None
    description: Mapping[str, Any] | None = None
    problem: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "problem", redact(self.problem))


@dataclass(frozen=True)
class ObservedNamespace:
    """The run's namespace as the Pod Security admission sees it: the level it enforces
    (`pod-security.kubernetes.io/enforce`, with its version), and what the executor knows that
    level will refuse of this run's pods (one line each, with the fixes); none: it admits them."""

    name: str
    enforce: str
    refusals: tuple[str, ...] = ()
