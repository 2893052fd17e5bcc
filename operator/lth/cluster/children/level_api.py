"""What the operator needs of an API that trains a level: how to build its object, where it is
served, and how to read it and its pods back. One module per API fills one in (`pytorchjob`,
`trainjob`); `level_jobs.LEVEL_JOB_APIS` lists them, and nothing else names a training API."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lth.api import Branch, LevelResult, RunSpec, StabilityResult, TicketStatus, TrainingApi
from lth.api.defaults import WorkloadDefaults
from lth.api.observed import ObservedChild, Stuck
from lth.api.workload import RunPaths
from lth.cluster.children.objects import CHILD_RESOURCES, RunRef


class BuildLevelJob(Protocol):
    def __call__(
        self,
        run: RunRef,
        spec: RunSpec,
        paths: RunPaths,
        level: int,
        branch: Branch,
        attempt: int,
        ticket: TicketStatus | None = None,
        defaults: WorkloadDefaults | None = None,
        rewind_to: str | None = None,
    ) -> dict[str, Any]: ...


class BuildTrainingJob(Protocol):
    """The API's object `name` that runs the trainer with `arguments` (`labels`: which job of the
    run it is, on the object and its pods); a level's job is one, with a level's arguments."""

    def __call__(
        self,
        run: RunRef,
        spec: RunSpec,
        name: str,
        labels: dict[str, str],
        arguments: list[str],
        attempt: int,
        defaults: WorkloadDefaults | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LevelJobApi:
    """One training API, as the operator drives it."""

    kind: TrainingApi
    served_by: str
    """Who serves the kind, for a create answered 404 (the kind is not installed)."""
    container: str
    """The trainer's container in every pod: its termination message and log."""
    build: BuildLevelJob
    build_job: BuildTrainingJob
    """The same object for any trainer command line: a job of the instability analysis too."""
    observe: Callable[[Mapping[str, Any], LevelResult | StabilityResult | None], ObservedChild]
    lead_pod_name: Callable[[str], str] | None
    """The name of the pod whose termination message carries the result, where it is known
    (read with one GET); None where the pod's name is generated (found by `lead_pod_selector`)."""
    lead_pod_selector: Callable[[str], str]
    pods_of: Callable[[Mapping[str, Any]], int]
    """How many pods the job has when it runs."""
    pod_controller: Callable[[Mapping[str, Any]], tuple[str, str, str | None]]
    """(kind, name, uid or None) of the object that creates the pods, whose FailedCreate events
    say why a pod was refused; without a uid, events since the job's creation count."""
    stuck_from_events: Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], Stuck | None] | None = None
    """Why the job has no pods, from its own events (a TrainJob's reconcile errors), if the API
    tells it only there."""

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural), as the custom-objects API and kopf name it."""
        return CHILD_RESOURCES[self.kind]
