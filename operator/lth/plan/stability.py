"""rewindTo auto: the instability analysis, a stage of children between level 0 and level 1
(Frankle, Dziugaite, Roy, Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis").

At a candidate point k of the ladder (spec.pruning.stability), two copies train from theta_k
(saved by level 0) with different data orders (parts a and b), then one job evaluates the
straight path between them (part path); k is stable when the error on the path rises by at most
the threshold above its ends. Instability falls as k grows, so the ladder is searched by
bisection: the earliest stable point is found with about log2(points + 1) measurements, each
of two copies (the most expensive part). Every job is stepped like a level (lth.plan.children:
retries, adoption, resume), spec.resources.maxParallelJobs at a time, and the search is derived
from what the status holds each pass, so a restarted executor goes on where it stopped."""

from __future__ import annotations

from collections.abc import Mapping

from lth.api import (
    RewindChoice,
    RunSpec,
    RunStatus,
    StabilityJobStatus,
    StabilityPart,
    StabilityPoint,
    StabilityResult,
    StabilityStatus,
)
from lth.api.naming import stability_job_name
from lth.api.pruning import epochs_text
from lth.plan.actions import CreateStabilityJob
from lth.plan.children import running_jobs, step_child
from lth.plan.context import Planning

COPIES: tuple[StabilityPart, StabilityPart] = ("a", "b")


def bounds(count: int, stable: Mapping[int, bool]) -> tuple[int, int]:
    """The ladder points still in question, [low, high): past the latest unstable point, before
    the earliest stable one (instability falls as k grows)."""
    low = max((point + 1 for point, ok in stable.items() if not ok), default=0)
    high = min((point for point, ok in stable.items() if ok), default=count)
    return low, high


def next_point(count: int, stable: Mapping[int, bool]) -> int | None:
    """The point to measure next (bisection of what is in question); None once the choice is known."""
    low, high = bounds(count, stable)
    return None if low >= high else (low + high) // 2


def choose(ladder: list[float], measured: list[StabilityPoint]) -> tuple[StabilityPoint, str]:
    """The measured point levels 1, 2, ... rewind to, and why: the earliest stable one, else the
    least unstable (when no candidate is stable)."""
    stable = [m for m in measured if m.stable]
    if stable:
        return min(stable, key=lambda m: m.point), "the earliest stable point of the ladder"
    least = min(measured, key=lambda m: (m.instability if m.instability is not None else 1e9, -m.point))
    return least, (
        f"no point of the ladder (up to {ladder[-1]:g} epochs) was stable: the least unstable measured"
    )


def rewind_chosen(p: Planning, spec: RunSpec) -> bool:
    """Advance the analysis; True once the rewind point is chosen (at once when the spec sets it)."""
    pruning = spec.pruning
    if not pruning.auto_rewind:
        return True
    settings = pruning.stability
    status = p.status.stability
    if status is None:
        ladder = settings.ladder(spec.training.epochs)
        status = StabilityStatus(ladder=ladder, threshold=settings.threshold, density=settings.density)
        p.status.stability = status
        p.event(
            "Normal",
            "StabilityAnalysis",
            f"rewindTo auto: measuring stability at up to {len(ladder)} candidate points "
            f"({', '.join(epochs_text(k) for k in ladder)}), threshold {settings.threshold:g} points",
        )
    if status.chosen is not None:
        return True
    while True:
        stable = {m.point: m.stable for m in status.points if m.stable is not None}
        point = next_point(len(status.ladder), stable)
        if point is None:
            _choose(p, status)
            return True
        if not _measure(p, spec, status, point):
            return False


def _choose(p: Planning, status: StabilityStatus) -> None:
    chosen, reason = choose(status.ladder, status.points)
    status.chosen = RewindChoice(
        point=chosen.point,
        epochs=chosen.epochs,
        step=chosen.step,
        rewind_to=epochs_text(chosen.epochs),
        instability=chosen.instability,
        reason=reason,
    )
    message = (
        f"rewindTo auto chose {status.chosen.rewind_to} (step {chosen.step}): {reason}, instability "
        f"{chosen.instability:.2f} points; the analysis cost {status.cost:.2f} dense-run equivalents"
    )
    p.event(
        "Normal" if chosen.stable else "Warning",
        "RewindChosen" if chosen.stable else "NoStablePoint",
        message,
    )


def _measure(p: Planning, spec: RunSpec, status: StabilityStatus, point: int) -> bool:
    """Step the jobs of one point: both copies, then the path; True once it is measured."""
    row = status.measured(point)
    if row is None:
        row = StabilityPoint(point=point, epochs=status.ladder[point])
        status.points.append(row)
        status.points.sort(key=lambda m: m.point)
    copies = [_step(p, spec, status, point, part) for part in COPIES]
    if not all(copies):
        return False
    if not _step(p, spec, status, point, "path"):
        return False
    return row.stable is not None


def _step(p: Planning, spec: RunSpec, status: StabilityStatus, point: int, part: StabilityPart) -> bool:
    """Step one job of the analysis (created when a slot is free); True once it succeeded."""
    name = stability_job_name(p.name, point, part)
    existing = status.job(point, part)
    if (
        existing is None
        and name not in p.children
        and spec.resources.max_parallel_jobs <= running_jobs(p.status)
    ):
        return False
    before = existing.phase if existing else None
    kind = spec.resources.level_kind  # a training job like a level's
    entry, verb = step_child(
        p, existing, name, kind, spec.retry.training.backoff_limit, failure_reason="StabilityFailed"
    )
    job = (
        entry
        if isinstance(entry, StabilityJobStatus)
        else StabilityJobStatus(**entry.model_dump(), point=point, part=part)
    )
    if existing is None:
        status.jobs.append(job)
    else:
        status.jobs[status.jobs.index(existing)] = job
    child = p.children.get(name)
    result = child.result if child is not None else None
    if verb == "succeeded" and before != "Succeeded" and isinstance(result, StabilityResult):
        _record(p, spec, status, job, result)
    if verb in ("create", "restart"):
        p.actions.append(CreateStabilityJob(name, point, part, job.attempts))
        what = "the path between its copies" if part == "path" else f"copy {part}"
        k = epochs_text(status.ladder[point])
        p.created(verb, f"{kind} {name} (instability analysis at k={k}: {what})", job.attempts)
    return verb == "succeeded"


def _record(
    p: Planning, spec: RunSpec, status: StabilityStatus, job: StabilityJobStatus, result: StabilityResult
) -> None:
    row = status.measured(job.point)
    assert row is not None, "a point's row is made before its jobs"
    row.step = result.step
    if result.duration_seconds is not None:
        job.duration_seconds = round(result.duration_seconds, 1)
    if job.part != "path":
        job.cost = round((result.trained_epochs or 0.0) / spec.training.epochs, 4)
        row.cost = round(sum(j.cost or 0.0 for j in status.jobs if j.point == job.point), 4)
        status.cost = round(sum(j.cost or 0.0 for j in status.jobs), 4)
        return
    assert result.errors is not None and result.instability is not None, "the path reports its errors"
    row.errors = [round(e, 2) for e in result.errors]
    row.instability = round(result.instability, 2)
    row.endpoint_error = round((result.errors[0] + result.errors[-1]) / 2, 2)
    row.stable = result.instability <= status.threshold
    p.event(
        "Normal",
        "StabilityMeasured",
        f"k={epochs_text(row.epochs)} (step {row.step}): instability {row.instability:.2f} points, "
        f"{'stable' if row.stable else 'unstable'} (threshold {status.threshold:g})",
    )


def describe(status: RunStatus) -> str | None:
    """While the analysis runs: what it measures, for the Progressing message; None otherwise."""
    stability = status.stability
    if stability is None or stability.chosen is not None:
        return None
    open_points = [m for m in stability.points if m.stable is None]
    doing = f"measuring k={epochs_text(open_points[0].epochs)}" if open_points else "choosing"
    done = len(stability.points) - len(open_points)
    return (
        f"instability analysis (rewindTo auto): {doing}, {done} of the {len(stability.ladder)} "
        f"candidate points measured so far"
    )


def progress(status: RunStatus) -> str | None:
    """The Progress column while the analysis runs: 'k 0.5ep' (the point being measured)."""
    stability = status.stability
    if stability is None or stability.chosen is not None:
        return None
    open_points = [m for m in stability.points if m.stable is None]
    return f"k {epochs_text(open_points[0].epochs)}" if open_points else None


def unfinished(status: RunStatus) -> list[StabilityJobStatus]:
    """The analysis' jobs not yet done (to stop when the run fails)."""
    jobs = status.stability.jobs if status.stability else []
    return [j for j in jobs if j.phase in ("Pending", "Running", "Retrying")]
