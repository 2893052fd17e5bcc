"""What a planning pass asks the executor to do, and the status to write once it is done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lth.api import TERMINAL_PHASES, Branch, RunSpec, RunStatus, StabilityPart
from lth.api.observed import ChildKind

Verb = Literal["create", "restart", "wait", "succeeded"]
"""What stepping a child decided: create it (or start it again: restart), wait for it, or it
has succeeded."""


@dataclass(frozen=True)
class CreatePreprocessing:
    name: str
    attempt: int


@dataclass(frozen=True)
class CreateLevelJob:
    name: str
    level: int
    branch: Branch
    attempt: int


@dataclass(frozen=True)
class CreateStabilityJob:
    """A training job of the instability analysis (rewindTo auto): a copy from ladder point
    `point` (part a or b), or the linear path between the two copies (part path)."""

    name: str
    point: int
    part: StabilityPart
    attempt: int


@dataclass(frozen=True)
class CreateExport:
    """The Job that writes runs/<name>/ticket/ (and uploads it, with spec.export.url)."""

    name: str
    attempt: int


@dataclass(frozen=True)
class DeleteChild:
    name: str
    kind: ChildKind


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Create = CreatePreprocessing | CreateLevelJob | CreateStabilityJob | CreateExport
Action = Create | DeleteChild | EmitEvent


@dataclass
class Plan:
    """What to do now, and the status to write once it is done."""

    status: RunStatus
    actions: list[Action] = field(default_factory=list)
    spec: RunSpec | None = None

    @property
    def creates(self) -> list[Create]:
        return [
            a
            for a in self.actions
            if isinstance(a, CreatePreprocessing | CreateLevelJob | CreateStabilityJob | CreateExport)
        ]

    @property
    def done(self) -> bool:
        """The run ended and its export (if it has one) too: nothing is left to plan."""
        return self.status.phase in TERMINAL_PHASES and not exporting(self.status)


def exporting(status: RunStatus) -> bool:
    """Whether an ended run's export Job is still to run or running."""
    return status.export is not None and status.export.phase not in ("Succeeded", "Failed")
