"""Which spec a pass acts on: the submitted one once it is valid, and after the run started
only its mutable fields (MUTABLE_SPEC_FIELDS); a change to a frozen field is refused and
kept from the accepted spec (status.acceptedSpec)."""

from __future__ import annotations

from typing import Any

from lth.api import FROZEN_WITHIN_MUTABLE, MUTABLE_SPEC_FIELDS, RunSpec, SpecReason
from lth.api.observed import ObservedNamespace
from lth.api.validation import Problem, SubmittedSpec, check_name, check_spec
from lth.plan.context import Planning
from lth.plan.summary import fail


def resolve_spec(p: Planning, submitted: SubmittedSpec) -> RunSpec | None:
    """The spec to act on: the new one where allowed, frozen fields from the accepted one."""
    spec, problems = submitted  # the schema's, or what the cluster does not allow (`admitted`)
    if spec is not None:
        problems = [*problems, *check_name(p.name, spec), *check_spec(spec)]
    accepted = p.status.accepted_spec
    if accepted is None:
        if problems or spec is None:
            message = _join(problems)
            p.condition("SpecAccepted", "False", "InvalidSpec", message)
            p.event("Warning", "InvalidSpec", message)
            fail(p, "InvalidSpec", message)
            return None
        p.status.accepted_spec = spec
        p.condition("SpecAccepted", "True", "Accepted", "spec accepted")
        return spec

    if spec is None or problems:
        _refuse(p, "InvalidSpec", "the changed spec is invalid: " + _join(problems))
        return accepted
    frozen = _frozen_changes(accepted, spec)
    if frozen:
        _refuse(
            p,
            "FrozenFieldChanged",
            "fields that cannot change after the run started: "
            + "; ".join(frozen)
            + " (revert them, or create a new run)",
        )
        spec = _with_mutable_fields(accepted, spec)
        problems = check_name(p.name, spec) + check_spec(spec)
        if problems:
            return accepted
        p.status.accepted_spec = spec
        return spec
    p.status.accepted_spec = spec
    p.condition("SpecAccepted", "True", "Accepted", "spec accepted")
    return spec


def _refuse(p: Planning, reason: SpecReason, message: str) -> None:
    previous = p.status.condition("SpecAccepted")
    if previous is None or previous.message != message:
        p.event("Warning", "SpecRefused", message)
    p.condition("SpecAccepted", "False", reason, message)


def _join(problems: list[Problem]) -> str:
    return "; ".join(str(problem) for problem in problems)


def _flatten(prefix: tuple[str, ...], value: Any) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict):
        flat: dict[tuple[str, ...], Any] = {}
        for key, inner in value.items():
            flat.update(_flatten((*prefix, key), inner))
        return flat
    return {prefix: value}


def _is_mutable(path: tuple[str, ...]) -> bool:
    if any(path[: len(f)] == f for f in FROZEN_WITHIN_MUTABLE):
        return False
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
    kept = accepted.model_dump()
    for path in FROZEN_WITHIN_MUTABLE:  # back to the accepted value, inside a section just taken
        target, value = merged, kept
        for key in path[:-1]:
            target, value = target[key], value[key]
        target[path[-1]] = value[path[-1]]
    return RunSpec.model_validate(merged)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def pods_admissible(p: Planning, namespace: ObservedNamespace) -> None:
    """PodsAdmissible: whether the namespace's Pod Security level admits every pod the run will
    create, said before any is refused (a Warning event when it turns out it will not)."""
    level = f"Pod Security {namespace.enforce}"
    if not namespace.refusals:
        message = f"namespace {namespace.name} enforces {level}: every pod of this run passes it"
        p.condition("PodsAdmissible", "True", "PodSecurityAdmits", message)
        return
    message = f"namespace {namespace.name} enforces {level}, which will refuse " + "; ".join(
        namespace.refusals
    )
    previous = p.status.condition("PodsAdmissible")
    if previous is None or previous.message != message:
        p.event("Warning", "PodSecurityRefuses", message)
    p.condition("PodsAdmissible", "False", "PodSecurityRefuses", message)
