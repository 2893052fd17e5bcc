"""A transfer's ticket (spec.ticket), resolved once, before any child is created: from what the
executor found where it points (another run's status, an exported ticket directory), or as
written for a URL (the trainer fetches and checks it). A missing, unfinished or unfitting
ticket fails the run with TicketResolved False and its reason."""

from __future__ import annotations

from typing import Any, NoReturn

from lth.api import TERMINAL_PHASES, RunSpec, RunStatus, TicketRefusal, TicketSpec, TicketStatus
from lth.api.observed import ObservedSource
from lth.api.validation import SubmittedSpec
from lth.plan.context import Planning, RunFailed


def ticket_to_resolve(submitted: SubmittedSpec, status: RunStatus | None) -> TicketSpec | None:
    """The spec.ticket an executor should look up for `plan`: only until it is resolved."""
    if status is not None and (status.ticket is not None or status.phase in TERMINAL_PHASES):
        return None
    spec, _ = submitted
    return spec.ticket if spec is not None else None


def resolve_ticket(p: Planning, spec: RunSpec, ticket: TicketSpec) -> TicketStatus:
    """The ticket spec.ticket names, from what the executor found there; raises RunFailed (and
    no child is created) when it is missing, unfinished or does not fit."""
    if ticket.run is not None:
        return _from_run(p, spec, ticket.run, ticket.level)
    if ticket.url is not None:
        return TicketStatus(source=f"url {ticket.url}", url=ticket.url)  # the trainer fetches and checks it
    assert ticket.path is not None
    return _from_directory(p, spec, ticket.path)


def _from_run(p: Planning, spec: RunSpec, run: str, wanted: int | None) -> TicketStatus:
    """spec.ticket.run: a level of a finished run in the same namespace, on this run's volume."""
    what = f"LotteryTicketRun {run!r} (spec.ticket.run)"
    source = p.source
    if source is None or not source.found:
        _refused(p, "TicketNotFound", f"{what} does not exist in this namespace")
    status = source.status
    if status is None:
        _refused(
            p, "TicketNotReady", f"{what} has no status: it has not started, or its status is unreadable"
        )
    if status.phase != "Succeeded":
        _refused(
            p,
            "TicketNotReady",
            f"{what} is {status.phase}, not Succeeded: a ticket is transferred once its run finished",
        )
    if wanted is None:
        if status.best is None:
            _refused(
                p,
                "TicketNotReady",
                f"{what} found no ticket within its match tolerance (status.best is empty); "
                "name one of its levels in spec.ticket.level",
            )
        level = status.best.level
    else:
        level = wanted
    entry = status.level_entry(level)
    if entry is None or entry.phase != "Succeeded":
        _refused(p, "TicketNotReady", f"{what} has no finished level {level}")
    accepted = status.accepted_spec
    arch = accepted.model.arch if accepted else None
    _check_architecture(p, spec, what, arch)
    if accepted is not None and (accepted.storage.claim_name, accepted.storage.sub_path) != (
        spec.storage.claim_name,
        spec.storage.sub_path,
    ):
        _refused(
            p,
            "TicketMismatch",
            f"{what} keeps its files on volume {accepted.storage.claim_name!r} (subPath "
            f"{accepted.storage.sub_path!r}), which this run does not mount (spec.storage); "
            "export its ticket (lth report) to a directory on this run's volume",
        )
    return TicketStatus(
        source=f"run {run} level {level}",
        run=run,
        level=level,
        density=entry.density,
        top1=entry.top1,
        architecture=arch,
    )


def _from_directory(p: Planning, spec: RunSpec, path: str) -> TicketStatus:
    """spec.ticket.path: an exported ticket directory, as the executor read it (if it could)."""
    what = f"ticket directory {path!r} (spec.ticket.path)"
    resolved = TicketStatus(source=f"directory {path}", path=path)
    source: ObservedSource | None = p.source
    if source is None:
        return resolved  # the executor cannot see the volume: the trainer checks the files
    if not source.found:
        _refused(p, "TicketNotFound", f"{what} does not exist")
    if source.problem or source.description is None:
        _refused(p, "TicketInvalid", f"{what}: {source.problem or 'no ticket.json'}")
    arch = source.description.get("architecture")
    _check_architecture(p, spec, what, arch)
    density = source.description.get("density")
    top1 = source.description.get("top1")
    return resolved.model_copy(
        update={
            "density": density if isinstance(density, float | int) else None,
            "top1": top1 if isinstance(top1, float | int) else None,
            "architecture": arch,
        }
    )


def _check_architecture(p: Planning, spec: RunSpec, what: str, arch: Any) -> None:
    if arch is not None and arch != spec.model.arch:
        _refused(p, "TicketMismatch", f"{what} is a {arch} ticket, but spec.model.arch is {spec.model.arch}")


def _refused(p: Planning, reason: TicketRefusal, message: str) -> NoReturn:
    p.condition("TicketResolved", "False", reason, message)
    raise RunFailed(reason, message)
