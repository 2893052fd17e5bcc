"""Stepping one child (the SparkApplication, a level's job, the export Job) one pass forward,
with its retries: its status entry moves in place, and the verb says what to do about it.

A child is created only when it is absent and its entry says it has not been created at the
current attempt; a child found without an entry (the status write after its creation was
lost) is adopted, not created again; each child carries its attempt number, so an old failed
attempt is told from the current one and deleted before the next is created."""

from __future__ import annotations

from lth.api import ChildStatus, ExportReason, FailureReason, RunStatus
from lth.api.observed import TRAINING_APIS, ChildKind, ObservedChild
from lth.plan.actions import Verb
from lth.plan.context import Planning, RunFailed


def step_child(
    p: Planning,
    entry: ChildStatus | None,
    name: str,
    kind: ChildKind,
    backoff_limit: int,
    failure_reason: FailureReason | ExportReason,
) -> tuple[ChildStatus, Verb]:
    """Move one child's entry forward; returns it and what to do about the child.

    Raises RunFailed when the child failed for good."""
    child = p.children.get(name)
    if entry is None:
        if child is None:
            return ChildStatus(name=name, phase="Pending", start_time=p.now), "create"
        entry = ChildStatus(name=name, phase="Pending", attempts=child.attempt, start_time=p.now)
    if entry.phase == "Succeeded":
        return entry, "succeeded"
    if entry.phase == "Failed":
        raise RunFailed(failure_reason, entry.message or f"{kind} {name} failed")
    if child is not None and child.attempt > entry.attempts:
        entry.attempts, entry.phase = child.attempt, "Pending"

    if entry.phase == "Retrying":
        if child is None:
            entry.phase = "Pending"
            return entry, "create"
        if child.attempt < entry.attempts:
            p.delete_stale(child, kind)
            return entry, "wait"
        entry.phase = "Pending"

    if child is None:
        entry.phase, entry.finish_time = "Failed", p.now
        entry.message = f"{kind} {name} was deleted before it finished"
        raise RunFailed("ChildDeleted", entry.message)
    if child.attempt < entry.attempts:
        entry.phase = "Retrying"
        p.delete_stale(child, kind)
        return entry, "wait"
    if child.deleting:
        return entry, "wait"
    if child.state == "Stopped":
        entry.phase = "Pending"
        return entry, "restart"
    if child.state == "Refused":
        return entry, _refused(p, entry, child, kind)
    return entry, _current_attempt(p, entry, child, kind, backoff_limit, failure_reason)


def _refused(p: Planning, entry: ChildStatus, child: ObservedChild, kind: ChildKind) -> Verb:
    """The API server refused to create the child: created again next pass at the same attempt
    when that may work (a quota frees up, an operator gets installed), else the run fails."""
    if not child.retryable:
        entry.phase, entry.finish_time = "Failed", p.now
        entry.message = f"{kind} {child.name} was refused by the API server: {child.message}"
        raise RunFailed("ChildRefused", entry.message)
    entry.phase = "Retrying"
    _stuck(p, entry, child)
    return "wait"


def _stuck(p: Planning, entry: ChildStatus, child: ObservedChild) -> None:
    """Why the child waits, in its entry and the pass's stuck list; a Warning event the first time."""
    if child.stuck is None:
        entry.message = child.message or None
        return
    if not child.stuck.described_by(entry.message):
        p.event("Warning", child.stuck.reason, child.stuck.message)
    entry.message = child.stuck.message
    p.stuck.append(child.stuck)


def _current_attempt(
    p: Planning,
    entry: ChildStatus,
    child: ObservedChild,
    kind: ChildKind,
    backoff_limit: int,
    failure_reason: FailureReason | ExportReason,
) -> Verb:
    """The child at its entry's attempt: succeeded, failed (retried while the backoff limit
    allows and its input was not the cause), or unfinished (and maybe stuck)."""
    name = child.name
    if child.state == "Succeeded" and kind in TRAINING_APIS and child.result is None:
        child = ObservedChild(
            name, child.attempt, "Failed", "finished without a result (termination message or result.json)"
        )
    if child.state == "Succeeded":
        entry.phase, entry.finish_time, entry.message = "Succeeded", p.now, None
        return "succeeded"
    if child.state == "Failed":
        detail = child.message or "no reason given"
        if entry.attempts <= backoff_limit and child.retryable:
            entry.message = f"attempt {entry.attempts} failed: {detail}"
            entry.attempts += 1
            entry.phase = "Retrying"
            p.event(
                "Warning",
                "Retrying",
                f"{kind} {name} {entry.message}; retrying ({entry.attempts - 1} of {backoff_limit} retries)",
            )
            p.delete_stale(child, kind)
            return "wait"
        entry.phase, entry.finish_time = "Failed", p.now
        entry.message = (
            f"{kind} {name} failed after {entry.attempts} attempt(s): {detail}"
            if child.retryable
            else f"{kind} {name} failed on its input (not retried): {detail}"
        )
        raise RunFailed(failure_reason, entry.message)
    entry.phase = "Running" if child.state == "Running" else "Pending"
    _stuck(p, entry, child)
    return "wait"


UNFINISHED = ("Pending", "Running", "Retrying")


def running_jobs(status: RunStatus) -> int:
    """Training jobs the run has unfinished: its levels' and its instability analysis'
    (spec.resources.maxParallelJobs bounds them together)."""
    jobs = [*status.levels, *(status.stability.jobs if status.stability else [])]
    return sum(1 for e in jobs if e.phase in UNFINISHED)
