"""The training APIs a level's job can be made with (spec.resources.trainingApi), one module each."""

from __future__ import annotations

from lth.api import TrainingApi
from lth.api.observed import ChildKind
from lth.cluster.children import pytorchjob, trainjob
from lth.cluster.children.level_api import LevelJobApi

LEVEL_JOB_APIS: dict[TrainingApi, LevelJobApi] = {api.kind: api for api in (pytorchjob.API, trainjob.API)}


def level_job_api(kind: ChildKind) -> LevelJobApi | None:
    """The training API of a child kind; None for the SparkApplication and the export Job."""
    return next((api for api in LEVEL_JOB_APIS.values() if api.kind == kind), None)
