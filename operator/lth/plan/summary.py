"""What the status says of the run as a whole: its phase and Progressing reason, the current
level, the dense reference, the best ticket, the cost so far, and how it ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from lth.api import BestTicket, EpochProgress, FailureReason, ProgressReason, RunSpec, RunStatus
from lth.api.workload import epoch_summary
from lth.plan import cost, stability
from lth.plan.actions import DeleteChild
from lth.plan.context import Planning


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
    """The Progress column: the highest main level while it is unfinished, with its epoch; the
    point the instability analysis measures while it runs."""
    main = [e for e in status.levels if e.branch == "main"]
    if not main:
        return None
    current = max(main, key=lambda e: e.level)
    if current.phase not in ("Pending", "Running", "Retrying"):
        return stability.progress(status)
    return epoch_summary(current.level, current.progress)


def summarise(p: Planning, spec: RunSpec) -> None:
    _summarise_levels(p, spec)
    if p.status.levels:
        p.status.cost = cost.summarise(spec, p.status)


def _summarise_levels(p: Planning, spec: RunSpec) -> None:
    status = p.status
    main = sorted((e for e in status.levels if e.branch == "main"), key=lambda e: e.level)
    if not main:
        return
    current = main[-1]
    status.progress = progress_summary(status)
    status.level = current.level
    status.density = current.density
    finished = [e for e in main if e.phase == "Succeeded" and e.top1 is not None]
    if finished:
        status.top1 = finished[-1].top1
    # The dense reference: level 0 of a search; the dense control of a transfer run.
    reference = "dense" if spec.ticket else "main"
    dense = next(
        (e for e in status.levels if (e.level, e.branch, e.phase) == (0, reference, "Succeeded")),
        None,
    )
    if dense is None or dense.top1 is None:
        return
    status.dense_top1 = dense.top1
    matching = [
        e for e in finished if e.top1 is not None and e.top1 >= dense.top1 - spec.pruning.match_tolerance
    ]
    if not matching:
        status.best = None  # a transferred ticket that falls short of its dense control
        return
    candidates = [e for e in matching if e.level == 0 or spec.pruning.is_ticket_level(e.level)]
    best = max(candidates or matching, key=lambda e: e.level)
    assert best.density is not None and best.top1 is not None
    status.best = BestTicket(
        level=best.level,
        density=best.density,
        top1=best.top1,
        summary=f"L{best.level} {best.density * 100:.1f}% {best.top1:.1f}%",
    )


def set_phase(
    p: Planning, phase: Literal["Preprocessing", "Training"], reason: ProgressReason, message: str
) -> None:
    """The phase, and Progressing: its usual reason, or the first stuck child's while one is."""
    if p.status.phase != phase:
        p.event("Normal", reason, f"phase {phase}: {message}")
    p.status.phase = phase
    if p.stuck:
        first, more = p.stuck[0], len(p.stuck) - 1
        reason = first.reason
        message = first.message + (f" (and {more} more stuck)" if more else "")
    p.condition("Progressing", "True", reason, message)


def succeed(p: Planning, spec: RunSpec) -> None:
    status = p.status
    best = status.best
    message = (
        f"best ticket: level {best.level}, density {best.density:.4f}, top-1 {best.top1:.2f}% "
        f"(dense {status.dense_top1:.2f}%, tolerance {spec.pruning.match_tolerance})"
        if best
        else "all levels finished"
    )
    transferred = status.level_entry(0)
    if status.ticket is not None and transferred is not None and transferred.top1 is not None:
        dense = f", dense {status.dense_top1:.2f}%" if status.dense_top1 is not None else ""
        message = (
            f"transferred ticket ({status.ticket.source}): top-1 {transferred.top1:.2f}% at "
            f"density {transferred.density or 0:.4f}{dense}; " + message
        )
    status.phase = "Succeeded"
    p.condition("Progressing", "False", "Succeeded", message)
    p.condition("Succeeded", "True", "TicketFound" if best else "LevelsDone", message)
    p.event("Normal", "Succeeded", message)


def fail(p: Planning, reason: FailureReason, message: str) -> None:
    """The run failed: Failed and Progressing False, and its unfinished jobs stopped."""
    p.status.phase = "Failed"
    p.condition("Progressing", "False", "Failed", message)
    p.condition("Failed", "True", reason, message)
    p.event("Warning", reason, message)
    p.status.progress = None
    accepted = p.status.accepted_spec
    kind = accepted.resources.level_kind if accepted is not None else "PyTorchJob"
    for entry in [*p.status.levels, *stability.unfinished(p.status)]:
        if entry.phase in ("Pending", "Running", "Retrying"):
            child = p.children.get(entry.name)
            if child is not None and not child.deleting:
                p.actions.append(DeleteChild(entry.name, kind))
            entry.phase, entry.finish_time = "Failed", p.now
            entry.message = entry.message or f"stopped: the run failed ({reason})"
