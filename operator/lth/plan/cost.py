"""What a run costs, in dense-run equivalents: the epochs a job trained times the fraction of
the training data it trained on, relative to one dense run (spec.training.epochs over the
whole training split). Plain IMP to level L costs L + 1 (less the rewind point's epochs at
each pruned level); the gradual search 1 (dense) + search.epochs / epochs + 1 per ticket;
rewindTo auto adds its instability analysis (two copies per measured point) to every ticket
that rewinds. Controls are counted apart: they check a ticket, they do not find it."""

from __future__ import annotations

from lth.api import Branch, CostStatus, LevelResult, RunSpec, RunStatus
from lth.api.search import base

DATA_FRACTION = 1.0
"""Every job trains on the whole training split (a data subset would scale the cost)."""


def planned_epochs(spec: RunSpec, level: int, branch: Branch = "main") -> float:
    """Epochs a job will train, from the spec alone (lth.api.search.base.planned_epochs)."""
    return base.planned_epochs(spec.pruning.method, spec, level, branch)


def job_cost(spec: RunSpec, level: int, branch: Branch, result: LevelResult | None = None) -> float:
    """Dense-run equivalents of one job: the trainer's count when its result has one."""
    trained = result.trained_epochs if result is not None else None
    if trained is None:
        trained = planned_epochs(spec, level, branch)
    return trained * DATA_FRACTION / spec.training.epochs


def ticket_levels(spec: RunSpec, level: int) -> list[int]:
    """The main levels a level's ticket took: those its mask and start weights come from, and itself."""
    return base.ticket_levels(spec.pruning.method, spec, level)


def summarise(spec: RunSpec, status: RunStatus) -> CostStatus:
    """The run's cost so far (finished jobs): the search, the controls, the best ticket."""
    search = controls = 0.0
    main: dict[int, float] = {}
    for entry in status.levels:
        if entry.phase != "Succeeded":
            continue
        cost = entry.cost if entry.cost is not None else job_cost(spec, entry.level, entry.branch)
        if entry.branch == "main":
            search += cost
            main[entry.level] = cost
        else:
            controls += cost
    # rewindTo auto: the analysis chose the rewind point every ticket past level 0 trains from.
    analysis = status.stability.cost if status.stability is not None else None
    ticket = None
    if status.best is not None:
        path = ticket_levels(spec, status.best.level)
        if all(level in main for level in path):
            before = analysis if analysis is not None and status.best.level > 0 else 0.0
            ticket = round(sum(main[level] for level in path) + before, 3)
    return CostStatus(
        search=round(search, 3),
        controls=round(controls, 3),
        stability=None if analysis is None else round(analysis, 3),
        ticket=ticket,
    )


def describe(cost: CostStatus, spec: RunSpec | None = None) -> str:
    """One line for lth status and the report."""
    ticket = f"best ticket {cost.ticket:.2f}, " if cost.ticket is not None else ""
    method = f" ({spec.pruning.search.method} search)" if spec is not None else ""
    analysis = (
        f", instability analysis {cost.stability:.2f} (in the ticket's)" if cost.stability is not None else ""
    )
    return (
        f"cost in dense-run equivalents{method}: {ticket}all main levels {cost.search:.2f}"
        f"{analysis}, controls {cost.controls:.2f} apart"
    )
