"""`lth render`: the children the operator would create for a spec, as `helm template` prints them.

The objects come from the operator's own builders (`lth.cluster`), with the run's paths,
the chart's Spark service account and workload defaults, and the ticket as the planner
would resolve it, so what a user inspects (or a checker validates) is what the operator
creates. Only what the API server assigns is a placeholder: the run's uid in the
ownerReferences. The rendered children are for reading, not for `kubectl apply`: the
garbage collector deletes an object whose owner uid does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from lth.api import REWIND_PATTERN, STABILITY_PARTS, Branch, LotteryTicketRun, RunSpec, TicketStatus
from lth.api.defaults import WorkloadDefaults, with_training_api
from lth.api.validation import problems_from_error
from lth.api.workload import RunPaths
from lth.cluster.children.level_jobs import LEVEL_JOB_APIS, stability_job
from lth.cluster.children.objects import RunRef
from lth.cluster.children.spark_application import spark_application
from lth.storage.files import UnreadableDocument, read_yaml

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
"""The run's uid, which exists only once the API server has stored the run."""
SPARK_SERVICE_ACCOUNT = "lth-spark"
"""The chart's `sparkServiceAccount.name` default (the operator's LTH_SPARK_SERVICE_ACCOUNT)."""
DEFAULT_NAMESPACE = "default"
BRANCHES: tuple[Branch, ...] = get_args(Branch)
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class RenderError(ValueError):
    """A command-line value that cannot be rendered; the message names the flag."""


@dataclass(frozen=True)
class ChartValues:
    """What `lth render` takes from a chart values file: the workloads and the driver's account."""

    workloads: WorkloadDefaults
    spark_service_account: str = SPARK_SERVICE_ACCOUNT


def read_values(path: Path) -> ChartValues:
    """A chart values file's `workloads` block (built-in defaults for what it leaves out) and
    `sparkServiceAccount.name`; a problem is a RenderError naming --values and the field."""
    where = f"--values {path}"
    try:
        documents = read_yaml(path)
    except UnreadableDocument as error:
        raise RenderError(f"--values {error}") from None
    values = documents[0] if documents else {}
    values = values or {}
    if not isinstance(values, dict):
        raise RenderError(f"{where}: is not a mapping of chart values")
    try:
        workloads = WorkloadDefaults.model_validate(values.get("workloads") or {})
    except ValidationError as error:
        problems = "; ".join(str(p) for p in problems_from_error(error, "workloads"))
        raise RenderError(f"{where}: {problems}") from None
    account = (values.get("sparkServiceAccount") or {}).get("name") or SPARK_SERVICE_ACCOUNT
    if not isinstance(account, str) or not NAMESPACE.match(account):
        raise RenderError(f"{where}: sparkServiceAccount.name: {account!r} is not a DNS-1123 label")
    return ChartValues(workloads, account)


def parse_level(raw: str | None, flag: str) -> int | None:
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise RenderError(f"{flag}: {raw!r} is not a level number (0, 1, 2, ...)")
    return int(raw)


def parse_branch(raw: str | None) -> Branch | None:
    if raw is None:
        return None
    for branch in BRANCHES:
        if raw == branch:
            return branch
    raise RenderError(f"--branch: {raw!r} is not one of {', '.join(BRANCHES)}")


def namespace_of(run: LotteryTicketRun, flag: str | None) -> str:
    """--namespace, else the document's metadata.namespace, else `default` (as kubectl apply)."""
    namespace = flag or run.metadata.namespace or DEFAULT_NAMESPACE
    if not NAMESPACE.match(namespace):
        where = "--namespace" if flag else "metadata.namespace"
        raise RenderError(f"{where}: {namespace!r} is not a namespace name (a DNS-1123 label)")
    return namespace


def resolved_ticket(spec: RunSpec, ticket_level: int | None) -> TicketStatus | None:
    """status.ticket as the planner resolves it, where the spec alone says it.

    A directory or a URL is what the spec names (the operator or the trainer checks its
    files). A source run's level is spec.ticket.level or, when that is absent, the source
    run's status.best, which only the cluster knows: then --ticket-level says it.
    """
    ticket = spec.ticket
    if ticket is None:
        if ticket_level is not None:
            raise RenderError("--ticket-level: the spec has no spec.ticket.run to take it")
        return None
    if ticket.run is None:
        if ticket_level is not None:
            raise RenderError("--ticket-level: applies to spec.ticket.run only, not a ticket path or url")
        if ticket.url is not None:
            return TicketStatus(source=f"url {ticket.url}", url=ticket.url)
        assert ticket.path is not None
        return TicketStatus(source=f"directory {ticket.path}", path=ticket.path)
    if ticket.level is not None:
        if ticket_level is not None and ticket_level != ticket.level:
            raise RenderError(f"--ticket-level: spec.ticket.level is {ticket.level} already")
        level = ticket.level
    elif ticket_level is None:
        raise RenderError(
            f"--ticket-level: spec.ticket.run {ticket.run!r} has no level: the ticket is that run's best "
            f"level, known only from its status.best (kubectl get ltr {ticket.run}); "
            "pass --ticket-level N to render with level N"
        )
    else:
        level = ticket_level
    return TicketStatus(source=f"run {ticket.run} level {level}", run=ticket.run, level=level)


def check_level(spec: RunSpec, level: int, branch: Branch) -> None:
    """The planner creates this level and branch for this spec, at most."""
    budget = spec.level_budget
    if level > budget:
        raise RenderError(
            f"--level: {level} is past the level budget: the spec's levels are 0 to {budget} "
            "(spec.pruning.levels)"
        )
    runs = ["main", *spec.control_branches(level)]
    if branch not in runs:
        raise RenderError(f"--branch: {branch} does not run at level {level}; it runs {', '.join(runs)}")


def resolved_rewind(spec: RunSpec, level: int, rewind_to: str | None) -> str | None:
    """rewindTo auto: the point a pruned level rewinds to, which only the run's analysis knows."""
    if rewind_to is not None and (not spec.pruning.auto_rewind or level == 0):
        raise RenderError("--rewind-to: for the pruned levels (--level 1 or more) of a rewindTo auto spec")
    if rewind_to is not None and (rewind_to == "auto" or not re.fullmatch(REWIND_PATTERN, rewind_to)):
        raise RenderError(f"--rewind-to: {rewind_to!r} is not a rewind point (0, 0.5ep, 2ep, 500it)")
    if rewind_to is None and spec.pruning.auto_rewind and level > 0:
        raise RenderError(
            f"--rewind-to: spec.pruning.rewindTo is auto: level {level} rewinds to the point the run's "
            "instability analysis chooses (status.stability.chosen.rewindTo); pass --rewind-to K"
        )
    return rewind_to


def stability_jobs(
    ref: RunRef, spec: RunSpec, paths: RunPaths, point: int, values: ChartValues
) -> list[dict[str, Any]]:
    """The instability analysis' jobs at one ladder point: its copies and the path between them."""
    ladder = spec.pruning.stability.ladder(spec.training.epochs)
    if not spec.pruning.auto_rewind:
        raise RenderError("--stability-point: the spec sets its rewind point (rewindTo is not auto)")
    if point >= len(ladder):
        raise RenderError(f"--stability-point: {point} is past the ladder's points 0 to {len(ladder) - 1}")
    return [stability_job(ref, spec, paths, point, part, 1, values.workloads) for part in STABILITY_PARTS]


def children(
    run: LotteryTicketRun,
    *,
    namespace: str,
    level: int | None = None,
    branch: Branch | None = None,
    values: ChartValues | None = None,
    ticket_level: int | None = None,
    rewind_to: str | None = None,
    stability_point: int | None = None,
) -> list[dict[str, Any]]:
    """What the operator creates for `run`: by default the SparkApplication `<run>-prep` (none for
    prepared shards) and level 0's main job (a PyTorchJob or a TrainJob, as spec.resources.trainingApi
    or the chart's workloads.trainingApi says); with a level or a branch, that level's job; with a
    stability point, the instability analysis' jobs there (of the same training API)."""
    values = values or ChartValues(WorkloadDefaults())
    spec, _ = with_training_api((run.spec, []), None, values.workloads)
    assert spec is not None
    ref = RunRef(name=run.metadata.name, namespace=namespace, uid=PLACEHOLDER_UID)
    paths = RunPaths(spec.storage.mount_path, run.metadata.name)
    if stability_point is not None:
        if level is not None or branch is not None or rewind_to is not None:
            raise RenderError("--stability-point: renders the analysis' jobs, not a level's (drop --level)")
        return stability_jobs(ref, spec, paths, stability_point, values)
    ticket = resolved_ticket(spec, ticket_level)
    out: list[dict[str, Any]] = []
    if level is None and branch is None and spec.dataset.format != "prepared":
        out.append(spark_application(ref, spec, paths, 1, values.spark_service_account, values.workloads))
    level, branch = level or 0, branch or "main"
    check_level(spec, level, branch)
    rewind = resolved_rewind(spec, level, rewind_to)
    build = LEVEL_JOB_APIS[spec.resources.level_kind].build
    out.append(build(ref, spec, paths, level, branch, 1, ticket, values.workloads, rewind))
    return out


def to_yaml(objects: list[dict[str, Any]], source: str) -> str:
    """YAML documents as `helm template` prints them: `---`, a `# Source:` line, the object."""
    return "".join(
        f"---\n# Source: {source} ({obj['kind']} {obj['metadata']['name']})\n"
        + yaml.safe_dump(obj, sort_keys=False, width=1 << 16)
        for obj in objects
    )
