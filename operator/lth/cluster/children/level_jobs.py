"""The training APIs a level's job can be made with (spec.resources.trainingApi), one module each;
and the instability analysis' jobs (rewindTo auto), which each API builds as it builds a level's."""

from __future__ import annotations

from typing import Any

from lth.api import RunSpec, StabilityPart, TrainingApi
from lth.api.defaults import WorkloadDefaults
from lth.api.naming import stability_job_name
from lth.api.observed import ChildKind
from lth.api.workload import TERMINATION_LOG, RunPaths, stability_arguments
from lth.cluster.children import pytorchjob, trainjob
from lth.cluster.children.level_api import LevelJobApi
from lth.cluster.children.objects import LABEL_STABILITY_PART, LABEL_STABILITY_POINT, RunRef

LEVEL_JOB_APIS: dict[TrainingApi, LevelJobApi] = {api.kind: api for api in (pytorchjob.API, trainjob.API)}


def level_job_api(kind: ChildKind) -> LevelJobApi | None:
    """The training API of a child kind; None for the SparkApplication and the export Job."""
    return next((api for api in LEVEL_JOB_APIS.values() if api.kind == kind), None)


def stability_job(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    point: int,
    part: StabilityPart,
    attempt: int,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The job `<run>-stability-PP-a|b|path` of the instability analysis (rewindTo auto): a level's
    job of the run's training API (spec.resources.trainingApi), with the trainer's command line
    of a copy, or of the path between the copies."""
    arguments = stability_arguments(spec, paths, point, part, TERMINATION_LOG)
    labels = {LABEL_STABILITY_POINT: str(point), LABEL_STABILITY_PART: part}
    name = stability_job_name(run.name, point, part)
    return LEVEL_JOB_APIS[spec.resources.level_kind].build_job(
        run, spec, name, labels, arguments, attempt, defaults
    )
