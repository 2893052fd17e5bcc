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
from datetime import datetime
from typing import cast

from lth.api import TERMINAL_PHASES, FailureReason, RunSpec, RunStatus
from lth.api.naming import prep_name
from lth.api.observed import ObservedChild, ObservedNamespace, ObservedSource
from lth.api.validation import SubmittedSpec
from lth.plan import stability
from lth.plan.acceptance import pods_admissible, resolve_spec
from lth.plan.actions import CreatePreprocessing, Plan, exporting
from lth.plan.children import step_child
from lth.plan.context import Planning, RunFailed
from lth.plan.export import export, exportable
from lth.plan.levels import controls, expected_density, main_chain
from lth.plan.summary import fail, set_phase, succeed, summarise
from lth.plan.tickets import resolve_ticket


def plan(
    name: str,
    generation: int,
    submitted: SubmittedSpec,
    status: RunStatus | None,
    children: Mapping[str, ObservedChild],
    now: datetime,
    source: ObservedSource | None = None,
    namespace: ObservedNamespace | None = None,
) -> Plan:
    """The next actions for run `name` and the status to record. `submitted` is the spec as the
    executor read it (`lth.api.validation.parse_spec`, once per reconcile); `source` is what the
    executor found where spec.ticket points (see `ticket_to_resolve`); `namespace`, where the
    executor read it, what the namespace's Pod Security level will refuse of the run's pods."""
    current = status or RunStatus()
    p = Planning(name, generation, current.model_copy(deep=True), children, now, source)
    if current.phase in TERMINAL_PHASES:
        if not exporting(current) or current.accepted_spec is None:
            return Plan(status=current)
        return export(p, current.accepted_spec)
    spec = resolve_spec(p, submitted)
    p.status.observed_generation = generation
    if spec is None:
        return p.result()
    if namespace is not None:
        pods_admissible(p, namespace)
    try:
        _advance(p, spec)
    except RunFailed as failure:
        # The export is stepped after the run ended: a failure here is the run's own.
        fail(p, cast(FailureReason, failure.reason), failure.message)
    if p.status.phase in TERMINAL_PHASES and exportable(p):
        return export(p, spec)
    return p.result(spec)


def _advance(p: Planning, spec: RunSpec) -> None:
    """The transfer's ticket, the preprocessing, then the levels and their controls."""
    if spec.ticket is not None and p.status.ticket is None:
        p.status.ticket = resolve_ticket(p, spec, spec.ticket)
        p.condition("TicketResolved", "True", "Resolved", f"transferring {p.status.ticket.source}")
    if spec.dataset.format != "prepared":
        entry, verb = step_child(
            p,
            p.status.preprocessing,
            prep_name(p.name),
            "SparkApplication",
            spec.retry.preprocessing.backoff_limit,
            failure_reason="PreprocessingFailed",
        )
        p.status.preprocessing = entry
        if verb in ("create", "restart"):
            p.actions.append(CreatePreprocessing(entry.name, entry.attempts))
            p.created(verb, f"SparkApplication {entry.name}", entry.attempts)
        if verb != "succeeded":
            set_phase(p, "Preprocessing", "Preprocessing", "preprocessing the data set")
            return
    chain_done = main_chain(p, spec)
    controls_done = controls(p, spec)
    summarise(p, spec)
    if chain_done and controls_done:
        succeed(p, spec)
    else:
        level = p.status.level or 0
        density = expected_density(p, spec, level)
        set_phase(
            p,
            "Training",
            "Training",
            stability.describe(p.status)
            or f"level {level} of at most {spec.level_budget}"
            + (f", density {density:.4f}" if density is not None else ""),
        )
