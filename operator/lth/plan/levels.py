"""The search policy: which levels and control branches run next, when the search stops, and
how many jobs run at once (spec.resources.maxParallelJobs); each level's job stepped with
lth.plan.children, its result recorded in its row of the per-level table."""

from __future__ import annotations

from lth.api import Branch, LevelResult, LevelStatus, RunSpec
from lth.api.naming import level_job_name
from lth.plan import cost, stability
from lth.plan.actions import CreateLevelJob, Verb
from lth.plan.children import running_jobs, step_child
from lth.plan.context import Planning


def main_chain(p: Planning, spec: RunSpec) -> bool:
    """Advance the prune-and-rewind levels; True once no main level is left to run."""
    level = 0
    while True:
        entry = p.status.level_entry(level)
        if entry is None and level_job_name(p.name, level) not in p.children:
            stop = stop_reason(p, spec, level)
            if stop is not None:
                p.condition("Progressing", "True", "LevelsDone", stop)
                return True
            if level == 1 and not stability.rewind_chosen(p, spec):
                return False  # rewindTo auto: the analysis comes first
            if _slots(p, spec) <= 0:
                return False
        verb = step_level(p, spec, level, "main")
        if verb != "succeeded":
            return False
        level += 1


def stop_reason(p: Planning, spec: RunSpec, level: int) -> str | None:
    """Why level `level` should not run, given the levels before it; None if it should."""
    if level == 0:
        return None
    pruning = spec.pruning
    previous = p.status.level_entry(level - 1)
    assert previous is not None and previous.density is not None
    if level > spec.level_budget:
        return f"reached the level budget ({spec.level_budget} pruned levels)"
    target = pruning.stop.target_density
    if target is not None and previous.density <= target:
        return f"reached the target density {target} at level {level - 1}"
    drop = pruning.stop.max_top1_drop
    dense = p.status.dense_top1
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


def controls(p: Planning, spec: RunSpec) -> bool:
    """Advance the control branches of every started level; True when all are done."""
    done = True
    started = sorted(e.level for e in p.status.levels if e.branch == "main")
    for level in started:
        for branch in spec.control_branches(level):
            name = level_job_name(p.name, level, branch)
            entry = p.status.level_entry(level, branch)
            if entry is None and name not in p.children and _slots(p, spec) <= 0:
                done = False
                continue
            if step_level(p, spec, level, branch) != "succeeded":
                done = False
    return done


def _slots(p: Planning, spec: RunSpec) -> int:
    return spec.resources.max_parallel_jobs - running_jobs(p.status)


def step_level(p: Planning, spec: RunSpec, level: int, branch: Branch) -> Verb:
    """Advance one level job; records its result when it succeeds."""
    name = level_job_name(p.name, level, branch)
    existing = p.status.level_entry(level, branch)
    before = existing.phase if existing else None
    kind = spec.resources.level_kind
    entry, verb = step_child(
        p, existing, name, kind, spec.retry.training.backoff_limit, failure_reason="LevelFailed"
    )
    row = (
        entry
        if isinstance(entry, LevelStatus)
        else LevelStatus(**entry.model_dump(), level=level, branch=branch)
    )
    if row.density is None:
        expected = 1.0 if branch == "dense" else expected_density(p, spec, level)
        row.density = None if expected is None else round(expected, 6)
    child = p.children.get(name)
    result = child.result if child is not None else None
    if verb == "succeeded" and before != "Succeeded" and isinstance(result, LevelResult):
        _record_result(p, row, result)
        row.cost = round(cost.job_cost(spec, level, branch, result), 4)
    if row.phase in ("Succeeded", "Failed"):
        row.progress = None  # the result says it all
    elif child is not None and child.progress is not None and child.attempt == row.attempts:
        row.progress = child.progress
    if existing is None:
        p.status.levels.append(row)
    else:
        p.status.levels[p.status.levels.index(existing)] = row
    if verb in ("create", "restart"):
        p.actions.append(CreateLevelJob(name, level, branch, row.attempts))
        density = f", density {row.density:.4f}" if row.density is not None else ""
        p.created(verb, f"{kind} {name} (level {level}, {branch}{density})", row.attempts)
    return verb


def _record_result(p: Planning, row: LevelStatus, result: LevelResult) -> None:
    row.density = round(result.density, 6)
    row.top1 = round(result.top1, 2)
    row.top5 = None if result.top5 is None else round(result.top5, 2)
    row.loss = None if result.loss is None else round(result.loss, 4)
    if result.duration_seconds is not None:
        row.duration_seconds = round(result.duration_seconds, 1)
    elif row.start_time is not None:
        row.duration_seconds = round((p.now - row.start_time).total_seconds(), 1)
    p.event(
        "Normal",
        "LevelFinished",
        f"level {row.level} ({row.branch}): top-1 {row.top1:.2f}% at density {row.density:.4f}",
    )


def expected_density(p: Planning, spec: RunSpec, level: int) -> float | None:
    """Density of `level` before its result (None: not known yet). A transfer run starts
    from its ticket's density, which a re-initialised head (dense, or pruned to the
    ticket head's density: its size depends on the target's classes) changes."""
    if spec.ticket is None:
        return spec.pruning.level_density(level)
    first = p.status.level_entry(0)
    if first is not None and first.phase == "Succeeded":
        start = first.density
    elif spec.ticket.head == "keep" and p.status.ticket is not None:
        start = p.status.ticket.density
    else:
        start = None
    return None if start is None else spec.pruning.density(level, start)
