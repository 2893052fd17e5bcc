"""One planning pass: its inputs (the run's name, generation, status, observed children, the
time, a transfer's source) and what it builds (the new status, the actions, the stuck
children), with the bookkeeping every part of the planner shares: conditions and events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lth.api import ConditionReason, ConditionType, ExportReason, FailureReason, RunSpec, RunStatus
from lth.api.observed import ChildKind, ObservedChild, ObservedSource, Stuck
from lth.api.status import Condition
from lth.api.wire import redact
from lth.plan.actions import Action, DeleteChild, EmitEvent, Plan, Verb


class RunFailed(Exception):
    """The run (or its export) failed for good: the pass records it and stops stepping."""

    def __init__(self, reason: FailureReason | ExportReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Planning:
    """The state of one pass of `lth.plan.plan` over one run."""

    name: str
    generation: int
    status: RunStatus
    """A copy of the run's status, moved forward in place."""
    children: Mapping[str, ObservedChild]
    now: datetime
    source: ObservedSource | None
    actions: list[Action] = field(default_factory=list)
    stuck: list[Stuck] = field(default_factory=list)
    """Children stuck in this pass, in the order they were stepped."""

    def result(self, spec: RunSpec | None = None) -> Plan:
        """The plan of this pass: its actions, and the status to write once they are done."""
        return Plan(status=self.status, actions=self.actions, spec=spec)

    def condition(
        self, type_: ConditionType, status: Literal["True", "False"], reason: ConditionReason, message: str
    ) -> None:
        """Set a condition; its lastTransitionTime changes only when its status does. Its message
        (often a child's own words) never shows a credential."""
        message = redact(message)
        previous = self.status.condition(type_)
        changed = previous is None or previous.status != status
        condition = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=self.now if changed or previous is None else previous.last_transition_time,
            observed_generation=self.generation,
        )
        if previous is None:
            self.status.conditions.append(condition)
        else:
            self.status.conditions[self.status.conditions.index(previous)] = condition

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, redact(message)))

    def created(self, verb: Verb, what: str, attempt: int) -> None:
        """The event of a child created (or started again: nothing ran it)."""
        if verb == "restart":
            self.event("Normal", "Restarted", f"started {what} again at attempt {attempt}: nothing ran it")
        else:
            self.event("Normal", "Created", f"created {what}")

    def delete_stale(self, child: ObservedChild, kind: ChildKind) -> None:
        """Delete an old attempt of a child (once: not while it is being deleted)."""
        if not child.deleting:
            self.actions.append(DeleteChild(child.name, kind))
