"""The LotteryTicketRun API (lth.dev/v1alpha1), and the contract every part of the system shares.

This package is the one source of truth: the spec and status models (its names, re-exported
here, are the API's types whichever module defines them), the CRD generated from them, the
checks beyond the schema, the cluster-wide defaults, the run's names and file layout, the
branch table, the search methods, the data manifest, the workloads' command lines and exit
protocol, and what executors observe for the planner. It imports only pydantic and PyYAML
(the CRD's text) of the outside world and nothing else of ours, so the Spark job's and the
trainer's images use it without kopf, kubernetes or rich.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from lth.api.branches import (
    CONTROL_BRANCHES as CONTROL_BRANCHES,
)
from lth.api.branches import (
    DEFAULT_TICKET_CONTROLS as DEFAULT_TICKET_CONTROLS,
)
from lth.api.branches import (
    Branch as Branch,
)
from lth.api.branches import (
    ControlBranch as ControlBranch,
)
from lth.api.branches import (
    TicketControl as TicketControl,
)
from lth.api.data_manifest import (
    DatasetSpec as DatasetSpec,
)
from lth.api.networks import (
    ModelSpec as ModelSpec,
)
from lth.api.pruning import (
    SEARCH_LEVEL as SEARCH_LEVEL,
)
from lth.api.pruning import (
    STABILITY_PARTS as STABILITY_PARTS,
)
from lth.api.pruning import (
    ControlsSpec as ControlsSpec,
)
from lth.api.pruning import (
    PruningSpec as PruningSpec,
)
from lth.api.pruning import (
    SearchMethod as SearchMethod,
)
from lth.api.pruning import (
    SearchSpec as SearchSpec,
)
from lth.api.pruning import (
    StabilityPart as StabilityPart,
)
from lth.api.pruning import (
    StabilitySpec as StabilitySpec,
)
from lth.api.pruning import (
    StopRules as StopRules,
)
from lth.api.spec import (
    FROZEN_WITHIN_MUTABLE as FROZEN_WITHIN_MUTABLE,
)
from lth.api.spec import (
    LOADER_PREFETCH_BATCHES as LOADER_PREFETCH_BATCHES,
)
from lth.api.spec import (
    MUTABLE_SPEC_FIELDS as MUTABLE_SPEC_FIELDS,
)
from lth.api.spec import (
    S3_URL_PATTERN as S3_URL_PATTERN,
)
from lth.api.spec import (
    ChildRetry as ChildRetry,
)
from lth.api.spec import (
    ExportSpec as ExportSpec,
)
from lth.api.spec import (
    MlflowSpec as MlflowSpec,
)
from lth.api.spec import (
    PreprocessingSpec as PreprocessingSpec,
)
from lth.api.spec import (
    ResourcesSpec as ResourcesSpec,
)
from lth.api.spec import (
    RetrySpec as RetrySpec,
)
from lth.api.spec import (
    RunSpec as RunSpec,
)
from lth.api.spec import (
    StorageSpec as StorageSpec,
)
from lth.api.spec import (
    TicketSpec as TicketSpec,
)
from lth.api.spec import (
    TrackingSpec as TrackingSpec,
)
from lth.api.spec import (
    TrainingApi as TrainingApi,
)
from lth.api.spec import (
    TrainingSpec as TrainingSpec,
)
from lth.api.status import (
    TERMINAL_PHASES as TERMINAL_PHASES,
)
from lth.api.status import (
    AdmissionReason as AdmissionReason,
)
from lth.api.status import (
    BestTicket as BestTicket,
)
from lth.api.status import (
    ChildPhase as ChildPhase,
)
from lth.api.status import (
    ChildStatus as ChildStatus,
)
from lth.api.status import (
    Condition as Condition,
)
from lth.api.status import (
    ConditionReason as ConditionReason,
)
from lth.api.status import (
    ConditionType as ConditionType,
)
from lth.api.status import (
    CostStatus as CostStatus,
)
from lth.api.status import (
    EpochProgress as EpochProgress,
)
from lth.api.status import (
    ExportReason as ExportReason,
)
from lth.api.status import (
    ExportStatus as ExportStatus,
)
from lth.api.status import (
    FailureReason as FailureReason,
)
from lth.api.status import (
    LevelResult as LevelResult,
)
from lth.api.status import (
    LevelStatus as LevelStatus,
)
from lth.api.status import (
    Phase as Phase,
)
from lth.api.status import (
    ProgressReason as ProgressReason,
)
from lth.api.status import (
    RewindChoice as RewindChoice,
)
from lth.api.status import (
    RunStatus as RunStatus,
)
from lth.api.status import (
    SpecReason as SpecReason,
)
from lth.api.status import (
    StabilityJobStatus as StabilityJobStatus,
)
from lth.api.status import (
    StabilityPoint as StabilityPoint,
)
from lth.api.status import (
    StabilityResult as StabilityResult,
)
from lth.api.status import (
    StabilityStatus as StabilityStatus,
)
from lth.api.status import (
    StuckReason as StuckReason,
)
from lth.api.status import (
    SucceededReason as SucceededReason,
)
from lth.api.status import (
    TicketReason as TicketReason,
)
from lth.api.status import (
    TicketRefusal as TicketRefusal,
)
from lth.api.status import (
    TicketStatus as TicketStatus,
)
from lth.api.wire import (
    API_VERSION as API_VERSION,
)
from lth.api.wire import (
    GROUP as GROUP,
)
from lth.api.wire import (
    KIND as KIND,
)
from lth.api.wire import (
    LABEL_VALUE_PATTERN as LABEL_VALUE_PATTERN,
)
from lth.api.wire import (
    MEMORY_PATTERN as MEMORY_PATTERN,
)
from lth.api.wire import (
    PLURAL as PLURAL,
)
from lth.api.wire import (
    QUANTITY_PATTERN as QUANTITY_PATTERN,
)
from lth.api.wire import (
    QUEUE_NAME_PATTERN as QUEUE_NAME_PATTERN,
)
from lth.api.wire import (
    REWIND_PATTERN as REWIND_PATTERN,
)
from lth.api.wire import (
    SHORT_NAMES as SHORT_NAMES,
)
from lth.api.wire import (
    SINGULAR as SINGULAR,
)
from lth.api.wire import (
    VERSION as VERSION,
)
from lth.api.wire import (
    ApiModel as ApiModel,
)
from lth.api.wire import (
    EnvFromSecret as EnvFromSecret,
)
from lth.api.wire import (
    Fraction as Fraction,
)
from lth.api.wire import (
    Percent as Percent,
)
from lth.api.wire import (
    SecretKeySelector as SecretKeySelector,
)
from lth.api.wire import (
    Toleration as Toleration,
)


class RunMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None


class LotteryTicketRun(ApiModel):
    """A whole LotteryTicketRun object, as in run.yaml."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    api_version: Literal["lth.dev/v1alpha1"] = "lth.dev/v1alpha1"
    kind: Literal["LotteryTicketRun"] = "LotteryTicketRun"
    metadata: RunMetadata
    spec: RunSpec
    status: RunStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _metadata_present(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("metadata"):
            raise ValueError("metadata.name is required")
        return data
