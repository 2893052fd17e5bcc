"""The planner: a pure function from (spec, status, observed children, now) to
the next actions and the new status.

The kopf operator and the local runner both call `plan` and only carry out
what it returns, so both run the same state machine. It reads nothing and
writes nothing; the same inputs always give the same answer, so a restarted
controller that replays it never asks for a child twice:

- a child is created only when it is absent and the status says it has not
  been created at the current attempt;
- a child found without a status entry (the status write after its creation
  was lost) is adopted, not created again;
- each child carries its attempt number (an annotation on the cluster), so an
  old failed attempt is told from the current one.

Executors apply the actions in order and write the status only when every
action succeeded; on any error they plan again from what they observe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

from lth.api import (
    MUTABLE_SPEC_FIELDS,
    TERMINAL_PHASES,
    BestTicket,
    Branch,
    ChildStatus,
    Condition,
    ConditionReason,
    ConditionType,
    EpochProgress,
    ExportReason,
    ExportStatus,
    FailureReason,
    LevelResult,
    LevelStatus,
    ProgressReason,
    RunSpec,
    RunStatus,
    SpecReason,
    TicketRefusal,
    TicketSpec,
    TicketStatus,
    workload,
)
from lth.api.naming import RunLayout, export_name, level_job_name, prep_name
from lth.api.observed import ChildKind, ObservedChild, ObservedSource, Stuck
from lth.api.validation import Problem, SubmittedSpec, check_name, check_spec
from lth.plan import cost

Verb = Literal["create", "restart", "wait", "succeeded"]


def ticket_to_resolve(submitted: SubmittedSpec, status: RunStatus | None) -> TicketSpec | None:
    """The spec.ticket an executor should look up for `plan`: only until it is resolved."""
    if status is not None and (status.ticket is not None or status.phase in TERMINAL_PHASES):
        return None
    spec, _ = submitted
    return spec.ticket if spec is not None else None


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


Create = CreatePreprocessing | CreateLevelJob | CreateExport
Action = Create | DeleteChild | EmitEvent


@dataclass
class Plan:
    """What to do now, and the status to write once it is done."""

    status: RunStatus
    actions: list[Action] = field(default_factory=list)
    spec: RunSpec | None = None

    @property
    def creates(self) -> list[Create]:
        return [a for a in self.actions if isinstance(a, CreatePreprocessing | CreateLevelJob | CreateExport)]

    @property
    def done(self) -> bool:
        """The run ended and its export (if it has one) too: nothing is left to plan."""
        return self.status.phase in TERMINAL_PHASES and not exporting(self.status)


def record_progress(status: RunStatus, latest: Mapping[str, EpochProgress]) -> RunStatus:
    """The status with the latest epoch of running levels (by child name), between plans: what
    the local runner shows while its levels run (on a cluster, `plan` records it each resync)."""
    updated = status.model_copy(deep=True)
    for row in updated.levels:
        if row.phase in ("Pending", "Running") and row.name in latest:
            row.phase, row.progress = "Running", latest[row.name]
    if updated.phase == "Training":
        updated.progress = progress_summary(updated)
    return updated


def progress_summary(status: RunStatus) -> str | None:
    """The Progress column: the highest main level while it is unfinished, with its epoch."""
    main = [e for e in status.levels if e.branch == "main"]
    if not main:
        return None
    current = max(main, key=lambda e: e.level)
    if current.phase not in ("Pending", "Running", "Retrying"):
        return None
    return workload.epoch_summary(current.level, current.progress)


def exporting(status: RunStatus) -> bool:
    """Whether an ended run's export Job is still to run or running."""
    return status.export is not None and status.export.phase not in ("Succeeded", "Failed")


class _RunFailed(Exception):
    def __init__(self, reason: FailureReason | ExportReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def plan(
    name: str,
    generation: int,
    submitted: SubmittedSpec,
    status: RunStatus | None,
    children: Mapping[str, ObservedChild],
    now: datetime,
    source: ObservedSource | None = None,
) -> Plan:
    """The next actions for run `name` and the status to record. `submitted` is the spec as the
    executor read it (`lth.api.validation.parse_spec`, once per reconcile); `source` is what the
    executor found where spec.ticket points (see `ticket_to_resolve`)."""
    current = status or RunStatus()
    if current.phase in TERMINAL_PHASES:
        if not exporting(current) or current.accepted_spec is None:
            return Plan(status=current)
        planner = _Planner(name, generation, current.model_copy(deep=True), children, now, source)
        return planner.export(current.accepted_spec)
    return _Planner(name, generation, current.model_copy(deep=True), children, now, source).run(submitted)


class _Planner:
    def __init__(
        self,
        name: str,
        generation: int,
        status: RunStatus,
        children: Mapping[str, ObservedChild],
        now: datetime,
        source: ObservedSource | None,
    ) -> None:
        self.name = name
        self.generation = generation
        self.status = status
        self.children = children
        self.now = now
        self.source = source
        self.actions: list[Action] = []
        self.stuck: list[Stuck] = []
        """Children stuck in this pass, in the order they were stepped."""

    # ------------------------------------------------------------------ top level

    def run(self, submitted: SubmittedSpec) -> Plan:
        spec = self._resolve_spec(submitted)
        self.status.observed_generation = self.generation
        if spec is None:
            return Plan(status=self.status, actions=self.actions)
        try:
            self._advance(spec)
        except _RunFailed as failure:
            # The export is stepped after the run ended: a failure here is the run's own.
            self._fail(cast(FailureReason, failure.reason), failure.message)
        if self.status.phase in TERMINAL_PHASES and self._exportable():
            return self.export(spec)
        return Plan(status=self.status, actions=self.actions, spec=spec)

    # ------------------------------------------------------------------ export

    def _exportable(self) -> bool:
        """A search that ended with finished levels gets its ticket and report written; a run that
        failed before any level finished has nothing to export."""
        return self.status.export is not None or any(
            e.branch == "main" and e.phase == "Succeeded" for e in self.status.levels
        )

    def export(self, spec: RunSpec) -> Plan:
        """Step the export Job of an ended run. Its failure is its own condition (Exported False):
        the run keeps the phase it ended with."""
        name = export_name(self.name)
        before = self.status.export
        was = before.phase if before else None  # _step_child moves the entry forward in place
        where = f"{RunLayout.relative(self.name).ticket} on volume {spec.storage.claim_name}"
        upload = f" and {spec.export.url}" if spec.export.url else ""
        try:
            entry, verb = self._step_child(
                before, name, "Job", spec.retry.export.backoff_limit, failure_reason="ExportFailed"
            )
        except _RunFailed as failure:
            assert before is not None, "a child that fails was created"
            self.status.export = before.model_copy(
                update={"phase": "Failed", "finish_time": self.now, "message": failure.message}
            )
            self._condition("Exported", "False", "ExportFailed", failure.message)
            self._event("Warning", "ExportFailed", failure.message)
            return Plan(status=self.status, actions=self.actions, spec=spec)
        export = entry if isinstance(entry, ExportStatus) else ExportStatus(**entry.model_dump())
        self.status.export = export
        if verb in ("create", "restart"):
            self.actions.append(CreateExport(name, export.attempts))
            self._created(verb, f"Job {name} (the ticket and report to {where}{upload})", export.attempts)
        if verb == "succeeded":
            export.path, export.url = str(RunLayout.relative(self.name).ticket), spec.export.url
            if was != "Succeeded":
                message = f"ticket and report in {where}{upload}"
                self._condition("Exported", "True", "Exported", message)
                self._event("Normal", "Exported", message)
        else:
            self._condition(
                "Exported", "False", "Exporting", f"Job {name} writes the ticket to {where}{upload}"
            )
        return Plan(status=self.status, actions=self.actions, spec=spec)

    def _advance(self, spec: RunSpec) -> None:
        if spec.ticket is not None and self.status.ticket is None:
            self.status.ticket = self._resolve_ticket(spec, spec.ticket)
            self._condition("TicketResolved", "True", "Resolved", f"transferring {self.status.ticket.source}")
        if spec.dataset.format != "prepared":
            entry, verb = self._step_child(
                self.status.preprocessing,
                prep_name(self.name),
                "SparkApplication",
                spec.retry.preprocessing.backoff_limit,
                failure_reason="PreprocessingFailed",
            )
            self.status.preprocessing = entry
            if verb in ("create", "restart"):
                self.actions.append(CreatePreprocessing(entry.name, entry.attempts))
                self._created(verb, f"SparkApplication {entry.name}", entry.attempts)
            if verb != "succeeded":
                self._set_phase("Preprocessing", "Preprocessing", "preprocessing the data set")
                return
        chain_done = self._main_chain(spec)
        controls_done = self._controls(spec)
        self._summarise(spec)
        if chain_done and controls_done:
            self._succeed(spec)
        else:
            level = self.status.level or 0
            density = self._expected_density(spec, level)
            self._set_phase(
                "Training",
                "Training",
                f"level {level} of at most {spec.level_budget}"
                + (f", density {density:.4f}" if density is not None else ""),
            )

    # ------------------------------------------------------------------ transfer

    def _resolve_ticket(self, spec: RunSpec, ticket: TicketSpec) -> TicketStatus:
        """The ticket spec.ticket names, from what the executor found there; raises _RunFailed
        (and no child is created) when it is missing, unfinished or does not fit."""
        source = self.source
        if ticket.run is not None:
            what = f"LotteryTicketRun {ticket.run!r} (spec.ticket.run)"
            if source is None or not source.found:
                self._ticket_refused("TicketNotFound", f"{what} does not exist in this namespace")
            assert source is not None
            status = source.status
            if status is None:
                self._ticket_refused(
                    "TicketNotReady", f"{what} has no status: it has not started, or its status is unreadable"
                )
            assert status is not None
            if status.phase != "Succeeded":
                self._ticket_refused(
                    "TicketNotReady",
                    f"{what} is {status.phase}, not Succeeded: a ticket is transferred once its run finished",
                )
            if ticket.level is None:
                if status.best is None:
                    self._ticket_refused(
                        "TicketNotReady",
                        f"{what} found no ticket within its match tolerance (status.best is empty); "
                        "name one of its levels in spec.ticket.level",
                    )
                assert status.best is not None
                level = status.best.level
            else:
                level = ticket.level
            entry = status.level_entry(level)
            if entry is None or entry.phase != "Succeeded":
                self._ticket_refused("TicketNotReady", f"{what} has no finished level {level}")
            assert entry is not None
            accepted = status.accepted_spec
            arch = accepted.model.arch if accepted else None
            self._check_architecture(spec, what, arch)
            if accepted is not None and (accepted.storage.claim_name, accepted.storage.sub_path) != (
                spec.storage.claim_name,
                spec.storage.sub_path,
            ):
                self._ticket_refused(
                    "TicketMismatch",
                    f"{what} keeps its files on volume {accepted.storage.claim_name!r} (subPath "
                    f"{accepted.storage.sub_path!r}), which this run does not mount (spec.storage); "
                    "export its ticket (lth report) to a directory on this run's volume",
                )
            return TicketStatus(
                source=f"run {ticket.run} level {level}",
                run=ticket.run,
                level=level,
                density=entry.density,
                top1=entry.top1,
                architecture=arch,
            )
        if ticket.url is not None:
            return TicketStatus(
                source=f"url {ticket.url}", url=ticket.url
            )  # the trainer fetches and checks it
        assert ticket.path is not None
        what = f"ticket directory {ticket.path!r} (spec.ticket.path)"
        resolved = TicketStatus(source=f"directory {ticket.path}", path=ticket.path)
        if source is None:
            return resolved  # the executor cannot see the volume: the trainer checks the files
        if not source.found:
            self._ticket_refused("TicketNotFound", f"{what} does not exist")
        if source.problem or source.description is None:
            self._ticket_refused("TicketInvalid", f"{what}: {source.problem or 'no ticket.json'}")
        assert source.description is not None
        arch = source.description.get("architecture")
        self._check_architecture(spec, what, arch)
        density = source.description.get("density")
        top1 = source.description.get("top1")
        return resolved.model_copy(
            update={
                "density": density if isinstance(density, float | int) else None,
                "top1": top1 if isinstance(top1, float | int) else None,
                "architecture": arch,
            }
        )

    def _check_architecture(self, spec: RunSpec, what: str, arch: Any) -> None:
        if arch is not None and arch != spec.model.arch:
            self._ticket_refused(
                "TicketMismatch",
                f"{what} is a {arch} ticket, but spec.model.arch is {spec.model.arch}",
            )

    def _ticket_refused(self, reason: TicketRefusal, message: str) -> None:
        self._condition("TicketResolved", "False", reason, message)
        raise _RunFailed(reason, message)

    def _expected_density(self, spec: RunSpec, level: int) -> float | None:
        """Density of `level` before its result (None: not known yet). A transfer run starts
        from its ticket's density, which a re-initialised head (dense, or pruned to the
        ticket head's density: its size depends on the target's classes) changes."""
        if spec.ticket is None:
            return spec.pruning.level_density(level)
        first = self.status.level_entry(0)
        if first is not None and first.phase == "Succeeded":
            start = first.density
        elif spec.ticket.head == "keep" and self.status.ticket is not None:
            start = self.status.ticket.density
        else:
            start = None
        return None if start is None else spec.pruning.density(level, start)

    # ------------------------------------------------------------------ spec

    def _resolve_spec(self, submitted: SubmittedSpec) -> RunSpec | None:
        """The spec to act on: the new one where allowed, frozen fields from the accepted one."""
        spec, problems = submitted
        if spec is not None:
            problems = check_name(self.name, spec) + check_spec(spec)
        accepted = self.status.accepted_spec
        if accepted is None:
            if problems or spec is None:
                message = _join(problems)
                self._condition("SpecAccepted", "False", "InvalidSpec", message)
                self._event("Warning", "InvalidSpec", message)
                self._fail("InvalidSpec", message)
                return None
            self.status.accepted_spec = spec
            self._condition("SpecAccepted", "True", "Accepted", "spec accepted")
            return spec

        if spec is None or problems:
            self._refuse("InvalidSpec", "the changed spec is invalid: " + _join(problems))
            return accepted
        frozen = _frozen_changes(accepted, spec)
        if frozen:
            self._refuse(
                "FrozenFieldChanged",
                "fields that cannot change after the run started: "
                + "; ".join(frozen)
                + " (revert them, or create a new run)",
            )
            spec = _with_mutable_fields(accepted, spec)
            problems = check_name(self.name, spec) + check_spec(spec)
            if problems:
                return accepted
            self.status.accepted_spec = spec
            return spec
        self.status.accepted_spec = spec
        self._condition("SpecAccepted", "True", "Accepted", "spec accepted")
        return spec

    def _refuse(self, reason: SpecReason, message: str) -> None:
        previous = self.status.condition("SpecAccepted")
        if previous is None or previous.message != message:
            self._event("Warning", "SpecRefused", message)
        self._condition("SpecAccepted", "False", reason, message)

    # ------------------------------------------------------------------ children

    def _step_child(
        self,
        entry: ChildStatus | None,
        name: str,
        kind: ChildKind,
        backoff_limit: int,
        failure_reason: FailureReason | ExportReason,
    ) -> tuple[Any, Verb]:
        """Move one child's entry forward; returns it and what to do about the child.

        Raises _RunFailed when the child failed for good.
        """
        child = self.children.get(name)
        if entry is None:
            if child is None:
                return ChildStatus(name=name, phase="Pending", start_time=self.now), "create"
            entry = ChildStatus(name=name, phase="Pending", attempts=child.attempt, start_time=self.now)
        if entry.phase == "Succeeded":
            return entry, "succeeded"
        if entry.phase == "Failed":
            raise _RunFailed(failure_reason, entry.message or f"{kind} {name} failed")
        if child is not None and child.attempt > entry.attempts:
            entry.attempts, entry.phase = child.attempt, "Pending"

        if entry.phase == "Retrying":
            if child is None:
                entry.phase = "Pending"
                return entry, "create"
            if child.attempt < entry.attempts:
                self._delete_stale(child, kind)
                return entry, "wait"
            entry.phase = "Pending"

        if child is None:
            entry.phase, entry.finish_time = "Failed", self.now
            entry.message = f"{kind} {name} was deleted before it finished"
            raise _RunFailed("ChildDeleted", entry.message)
        if child.attempt < entry.attempts:
            entry.phase = "Retrying"
            self._delete_stale(child, kind)
            return entry, "wait"
        if child.deleting:
            return entry, "wait"
        if child.state == "Stopped":
            entry.phase = "Pending"
            return entry, "restart"

        if child.state == "Succeeded" and kind == "PyTorchJob" and child.result is None:
            child = ObservedChild(
                name,
                child.attempt,
                "Failed",
                "finished without a result (termination message or result.json)",
            )
        if child.state == "Succeeded":
            entry.phase, entry.finish_time, entry.message = "Succeeded", self.now, None
            return entry, "succeeded"
        if child.state == "Failed":
            detail = child.message or "no reason given"
            if entry.attempts <= backoff_limit and child.retryable:
                entry.message = f"attempt {entry.attempts} failed: {detail}"
                entry.attempts += 1
                entry.phase = "Retrying"
                self._event(
                    "Warning",
                    "Retrying",
                    f"{kind} {name} {entry.message}; retrying "
                    f"({entry.attempts - 1} of {backoff_limit} retries)",
                )
                self._delete_stale(child, kind)
                return entry, "wait"
            entry.phase, entry.finish_time = "Failed", self.now
            entry.message = (
                f"{kind} {name} failed after {entry.attempts} attempt(s): {detail}"
                if child.retryable
                else f"{kind} {name} failed on its input (not retried): {detail}"
            )
            raise _RunFailed(failure_reason, entry.message)
        entry.phase = "Running" if child.state == "Running" else "Pending"
        if child.stuck is None:
            entry.message = child.message or None
            return entry, "wait"
        if not child.stuck.described_by(entry.message):
            self._event("Warning", child.stuck.reason, child.stuck.message)
        entry.message = child.stuck.message
        self.stuck.append(child.stuck)
        return entry, "wait"

    def _delete_stale(self, child: ObservedChild, kind: ChildKind) -> None:
        if not child.deleting:
            self.actions.append(DeleteChild(child.name, kind))

    def _step_level(self, spec: RunSpec, level: int, branch: Branch) -> Verb:
        """Advance one level job; records its result when it succeeds."""
        name = level_job_name(self.name, level, branch)
        existing = self.status.level_entry(level, branch)
        before = existing.phase if existing else None
        entry, verb = self._step_child(
            existing,
            name,
            "PyTorchJob",
            spec.retry.training.backoff_limit,
            failure_reason="LevelFailed",
        )
        row = (
            entry
            if isinstance(entry, LevelStatus)
            else LevelStatus(**entry.model_dump(), level=level, branch=branch)
        )
        if row.density is None:
            expected = 1.0 if branch == "dense" else self._expected_density(spec, level)
            row.density = None if expected is None else round(expected, 6)
        child = self.children.get(name)
        if verb == "succeeded" and before != "Succeeded" and child and child.result:
            self._record_result(row, child.result)
            row.cost = round(cost.job_cost(spec, level, branch, child.result), 4)
        if row.phase in ("Succeeded", "Failed"):
            row.progress = None  # the result says it all
        elif child is not None and child.progress is not None and child.attempt == row.attempts:
            row.progress = child.progress
        if existing is None:
            self.status.levels.append(row)
        else:
            self.status.levels[self.status.levels.index(existing)] = row
        if verb in ("create", "restart"):
            self.actions.append(CreateLevelJob(name, level, branch, row.attempts))
            density = f", density {row.density:.4f}" if row.density is not None else ""
            self._created(verb, f"PyTorchJob {name} (level {level}, {branch}{density})", row.attempts)
        return verb

    def _created(self, verb: Verb, what: str, attempt: int) -> None:
        if verb == "restart":
            self._event("Normal", "Restarted", f"started {what} again at attempt {attempt}: nothing ran it")
        else:
            self._event("Normal", "Created", f"created {what}")

    def _record_result(self, row: LevelStatus, result: LevelResult) -> None:
        row.density = round(result.density, 6)
        row.top1 = round(result.top1, 2)
        row.top5 = None if result.top5 is None else round(result.top5, 2)
        row.loss = None if result.loss is None else round(result.loss, 4)
        if result.duration_seconds is not None:
            row.duration_seconds = round(result.duration_seconds, 1)
        elif row.start_time is not None:
            row.duration_seconds = round((self.now - row.start_time).total_seconds(), 1)
        self._event(
            "Normal",
            "LevelFinished",
            f"level {row.level} ({row.branch}): top-1 {row.top1:.2f}% at density {row.density:.4f}",
        )

    # ------------------------------------------------------------------ levels

    def _running(self) -> int:
        return sum(1 for e in self.status.levels if e.phase in ("Pending", "Running", "Retrying"))

    def _slots(self, spec: RunSpec) -> int:
        return spec.resources.max_parallel_jobs - self._running()

    def _main_chain(self, spec: RunSpec) -> bool:
        """Advance the prune-and-rewind levels; True once no main level is left to run."""
        level = 0
        while True:
            entry = self.status.level_entry(level)
            if entry is None and level_job_name(self.name, level) not in self.children:
                stop = self._stop_reason(spec, level)
                if stop is not None:
                    self._condition("Progressing", "True", "LevelsDone", stop)
                    return True
                if self._slots(spec) <= 0:
                    return False
            verb = self._step_level(spec, level, "main")
            if verb != "succeeded":
                return False
            level += 1

    def _stop_reason(self, spec: RunSpec, level: int) -> str | None:
        """Why level `level` should not run, given the levels before it; None if it should."""
        if level == 0:
            return None
        pruning = spec.pruning
        previous = self.status.level_entry(level - 1)
        assert previous is not None and previous.density is not None
        if level > spec.level_budget:
            return f"reached the level budget ({spec.level_budget} pruned levels)"
        target = pruning.stop.target_density
        if target is not None and previous.density <= target:
            return f"reached the target density {target} at level {level - 1}"
        drop = pruning.stop.max_top1_drop
        dense = self.status.dense_top1
        sparse = level - 1 >= 1 or spec.ticket is not None  # a transferred level 0 is sparse already
        if (
            drop is not None
            and sparse
            and dense is not None
            and previous.top1 is not None
            and previous.top1 < dense - drop
        ):
            return (
                f"level {level - 1} top-1 {previous.top1:.2f}% fell more than {drop} points "
                f"below dense {dense:.2f}%"
            )
        return None

    def _controls(self, spec: RunSpec) -> bool:
        """Advance the control branches of every started level; True when all are done."""
        done = True
        started = sorted(e.level for e in self.status.levels if e.branch == "main")
        for level in started:
            for branch in spec.control_branches(level):
                name = level_job_name(self.name, level, branch)
                entry = self.status.level_entry(level, branch)
                if entry is None and name not in self.children and self._slots(spec) <= 0:
                    done = False
                    continue
                if self._step_level(spec, level, branch) != "succeeded":
                    done = False
        return done

    # ------------------------------------------------------------------ status

    def _summarise(self, spec: RunSpec) -> None:
        self._summarise_levels(spec)
        if self.status.levels:
            self.status.cost = cost.summarise(spec, self.status)

    def _summarise_levels(self, spec: RunSpec) -> None:
        main = sorted((e for e in self.status.levels if e.branch == "main"), key=lambda e: e.level)
        if not main:
            return
        current = main[-1]
        self.status.progress = progress_summary(self.status)
        self.status.level = current.level
        self.status.density = current.density
        finished = [e for e in main if e.phase == "Succeeded" and e.top1 is not None]
        if finished:
            self.status.top1 = finished[-1].top1
        # The dense reference: level 0 of a search; the dense control of a transfer run.
        reference = "dense" if spec.ticket else "main"
        dense = next(
            (e for e in self.status.levels if (e.level, e.branch, e.phase) == (0, reference, "Succeeded")),
            None,
        )
        if dense is None or dense.top1 is None:
            return
        self.status.dense_top1 = dense.top1
        matching = [
            e for e in finished if e.top1 is not None and e.top1 >= dense.top1 - spec.pruning.match_tolerance
        ]
        if not matching:
            self.status.best = None  # a transferred ticket that falls short of its dense control
            return
        candidates = [e for e in matching if e.level == 0 or spec.pruning.is_ticket_level(e.level)]
        best = max(candidates or matching, key=lambda e: e.level)
        assert best.density is not None and best.top1 is not None
        self.status.best = BestTicket(
            level=best.level,
            density=best.density,
            top1=best.top1,
            summary=f"L{best.level} {best.density * 100:.1f}% {best.top1:.1f}%",
        )

    def _set_phase(
        self, phase: Literal["Preprocessing", "Training"], reason: ProgressReason, message: str
    ) -> None:
        """The phase, and Progressing: its usual reason, or the first stuck child's while one is."""
        if self.status.phase != phase:
            self._event("Normal", reason, f"phase {phase}: {message}")
        self.status.phase = phase
        if self.stuck:
            first, more = self.stuck[0], len(self.stuck) - 1
            reason = first.reason
            message = first.message + (f" (and {more} more stuck)" if more else "")
        self._condition("Progressing", "True", reason, message)

    def _succeed(self, spec: RunSpec) -> None:
        best = self.status.best
        message = (
            f"best ticket: level {best.level}, density {best.density:.4f}, top-1 {best.top1:.2f}% "
            f"(dense {self.status.dense_top1:.2f}%, tolerance {spec.pruning.match_tolerance})"
            if best
            else "all levels finished"
        )
        transferred = self.status.level_entry(0)
        if self.status.ticket is not None and transferred is not None and transferred.top1 is not None:
            dense = f", dense {self.status.dense_top1:.2f}%" if self.status.dense_top1 is not None else ""
            message = (
                f"transferred ticket ({self.status.ticket.source}): top-1 {transferred.top1:.2f}% at "
                f"density {transferred.density or 0:.4f}{dense}; " + message
            )
        self.status.phase = "Succeeded"
        self._condition("Progressing", "False", "Succeeded", message)
        self._condition("Succeeded", "True", "TicketFound" if best else "LevelsDone", message)
        self._event("Normal", "Succeeded", message)

    def _fail(self, reason: FailureReason, message: str) -> None:
        self.status.phase = "Failed"
        self._condition("Progressing", "False", "Failed", message)
        self._condition("Failed", "True", reason, message)
        self._event("Warning", reason, message)
        self.status.progress = None
        for entry in self.status.levels:
            if entry.phase in ("Pending", "Running", "Retrying"):
                child = self.children.get(entry.name)
                if child is not None and not child.deleting:
                    self.actions.append(DeleteChild(entry.name, "PyTorchJob"))
                entry.phase, entry.finish_time = "Failed", self.now
                entry.message = entry.message or f"stopped: the run failed ({reason})"

    def _condition(
        self, type_: ConditionType, status: Literal["True", "False"], reason: ConditionReason, message: str
    ) -> None:
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

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))


def _join(problems: list[Problem]) -> str:
    return "; ".join(str(p) for p in problems)


def _flatten(prefix: tuple[str, ...], value: Any) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict):
        flat: dict[tuple[str, ...], Any] = {}
        for key, inner in value.items():
            flat.update(_flatten((*prefix, key), inner))
        return flat
    return {prefix: value}


def _is_mutable(path: tuple[str, ...]) -> bool:
    return any(path[: len(m)] == m for m in MUTABLE_SPEC_FIELDS)


def _frozen_changes(accepted: RunSpec, new: RunSpec) -> list[str]:
    """`spec.a.b (old -> new)` for every frozen field that differs."""
    old = _flatten((), accepted.model_dump(mode="json"))
    now = _flatten((), new.model_dump(mode="json"))
    changes = []
    for path in sorted(set(old) | set(now)):
        if _is_mutable(path) or old.get(path) == now.get(path):
            continue
        wire = ".".join(_camel(p) for p in path)
        changes.append(f"spec.{wire} ({old.get(path)!r} -> {now.get(path)!r})")
    return changes


def _with_mutable_fields(accepted: RunSpec, new: RunSpec) -> RunSpec:
    merged = accepted.model_dump()
    updates = new.model_dump()
    for path in MUTABLE_SPEC_FIELDS:
        target, source = merged, updates
        for key in path[:-1]:
            target, source = target[key], source[key]
            if target is None or source is None:
                break  # the section itself is frozen (spec.ticket): nothing mutable to take
        else:
            target[path[-1]] = source[path[-1]]
    return RunSpec.model_validate(merged)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
