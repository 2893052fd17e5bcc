"""The LotteryTicketRun API (lth.dev/v1alpha1): the one source of truth.

The CRD schema, `lth validate`, the trainer's and the Spark job's view of a run
and the docs all come from these models. This module imports only pydantic (and
the standard library) so that the Spark and trainer images can use it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "lth.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LotteryTicketRun"
PLURAL = "lotteryticketruns"
SINGULAR = "lotteryticketrun"
SHORT_NAMES = ["ltr"]

MEMORY_PATTERN = r"^[0-9]+[kmgt]?$"
"""Spark's memory notation (`4g`, `512m`), as spark.driver.memory takes it."""

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
"""A Kubernetes resource quantity (`16`, `500m`, `64Gi`)."""

REWIND_PATTERN = r"^(0|[0-9]+(ep|it))$"
"""`6ep` (epochs), `500it` (optimizer steps), or `0` (the initial weights)."""

LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"

Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ApiModel(BaseModel):
    """camelCase on the wire (as Kubernetes APIs are), snake_case in Python; unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML and in the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- spec


class DatasetSpec(ApiModel):
    """Where the images come from and what size the trainer sees."""

    format: Literal["imagenet", "imagefolder", "prepared"] = Field(
        "imagenet",
        description=(
            "imagenet: the ILSVRC-2012 archives as downloaded (train tar of per-class tars, "
            "val tar, devkit); imagefolder: a tree with one folder per class; "
            "prepared: the data/ directory (shards + manifest.json) of an earlier run, "
            "which skips preprocessing."
        ),
    )
    path: str = Field(
        min_length=1,
        description="Where the input is: an absolute path, or relative to the storage root.",
    )
    image_size: int = Field(
        256,
        ge=16,
        le=1024,
        description=(
            "Side of the square images written to the shards, pixels. The default keeps the 256 x 256 "
            "center of a short side of 256, from which training takes random 224 crops and evaluation "
            "the 224 center (torchvision's ImageNet protocol)."
        ),
    )
    resize: Literal["squash", "center-crop"] = Field(
        "center-crop",
        description=(
            "center-crop: resize the short side to shortSide, then keep the imageSize x imageSize "
            "center; squash: resize the whole image to imageSize x imageSize (aspect not kept)."
        ),
    )
    short_side: int | None = Field(
        None,
        ge=16,
        le=2048,
        description="Short side before the center crop, pixels (default imageSize).",
    )
    classes: list[str] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="Only these classes (WordNet ids or folder names); all when absent.",
    )

    @property
    def crop_short_side(self) -> int:
        return self.short_side or self.image_size


class PreprocessingSpec(ApiModel):
    """The one-off Spark job that turns the input into training shards."""

    image: str | None = Field(
        None,
        min_length=1,
        description="Spark container image (default: the operator's, chart value workloads.sparkImage).",
    )
    spark_version: str = Field("4.0.1", min_length=1, description="Spark version of the image.")
    executors: int = Field(4, ge=1, le=1000, description="Number of Spark executors.")
    executor_cores: int = Field(4, ge=1, le=256, description="Cores per executor.")
    executor_memory: str = Field(
        "8g", pattern=MEMORY_PATTERN, description="Memory per executor (Spark notation: 8g, 512m)."
    )
    driver_cores: int = Field(1, ge=1, le=64, description="Cores of the Spark driver.")
    driver_memory: str = Field(
        "2g", pattern=MEMORY_PATTERN, description="Memory of the Spark driver (Spark notation)."
    )
    shard_size_mb: int = Field(1024, ge=1, le=65536, description="Target size of one shard, MiB.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the output images.")


class ModelSpec(ApiModel):
    """The network to prune."""

    arch: Literal["resnet18", "resnet34", "resnet50", "smallcnn"] = Field(
        "resnet50",
        description=(
            "torchvision ResNet-18/34/50, or smallcnn (conv5x5x8-pool-conv5x5x16-pool-fc64-fc) for tiny data."
        ),
    )
    num_classes: int | None = Field(
        None, ge=2, description="Output classes; taken from the data's manifest when absent."
    )


LOADER_PREFETCH_BATCHES = 4
"""Batches each data-loader worker keeps ready (the trainer's DataLoader prefetch_factor): they
sit in /dev/shm, so spec.resources.shmSize must hold them (lth.validation checks it)."""


class TrainingSpec(ApiModel):
    """How one level trains. Epochs and milestones count passes over the training split."""

    epochs: int = Field(90, ge=1, le=10000, description="Epochs per level.")
    batch_size: int = Field(1024, ge=1, description="Global batch size, summed over all processes.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: float = Field(0.4, gt=0, le=100, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD).")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["step", "cosine", "constant"] = Field(
        "step",
        description="step: multiply by gamma at each milestone; cosine: decay to 0; constant.",
    )
    milestones: list[int] = Field(
        default_factory=lambda: [30, 60, 80],
        description="Epochs at which a step schedule multiplies the rate by gamma.",
    )
    gamma: float = Field(0.1, gt=0, le=1, description="Factor of the step schedule.")
    warmup_epochs: int = Field(5, ge=0, description="Linear warmup from 0, epochs.")
    augmentation: Literal["random-resized-crop", "none"] = Field(
        "random-resized-crop",
        description=(
            "Train-time augmentation: random-resized-crop (scale 0.1-1, ratio 0.8-1.25) plus "
            "horizontal flip, as the ImageNet references do; none for digits and other data "
            "that flips would change."
        ),
    )
    crop_size: int | None = Field(
        None,
        ge=16,
        le=1024,
        description=(
            "Side of the crops the network sees, pixels: random-resized crops in training, the "
            "center crop in evaluation. Default, from what the data's manifest says was stored: "
            "87.5 % of the short side for center-crop data (224 of 256, as the ImageNet references "
            "evaluate), at most the stored size; the whole image for squashed data."
        ),
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "bf16", description="Autocast precision on GPU; on CPU the trainer runs fp32."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of init, data order and augmentation.")
    workers: int = Field(8, ge=0, le=128, description="Data-loader worker processes per trainer.")
    sync_batch_norm: bool = Field(
        False,
        description=(
            "BatchNorm statistics over the global batch (SyncBatchNorm, GPUs only) instead of each "
            "process's slice of it; costs one all-reduce per BatchNorm layer per step."
        ),
    )
    gradient_compression: Literal["none", "bf16"] = Field(
        "none",
        description=(
            "bf16: DDP all-reduces gradients in bfloat16 (half the bytes; GPUs with NCCL only); "
            "none: in their own precision."
        ),
    )

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, value: list[int]) -> list[int]:
        if any(m < 1 for m in value):
            raise ValueError("milestones are epochs >= 1")
        if value != sorted(set(value)):
            raise ValueError("milestones must be strictly increasing")
        return value


class StopRules(ApiModel):
    """When IMP stops before the level budget."""

    target_density: float | None = Field(
        None, gt=0, le=1, description="Stop once a level's density is at or below this fraction."
    )
    max_top1_drop: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Stop after the first level whose top-1 is more than this many points below dense.",
    )


ControlBranch = Literal["random-reinit", "random-prune"]
CONTROL_BRANCHES: tuple[ControlBranch, ...] = ("random-reinit", "random-prune")
Branch = Literal["main", "random-reinit", "random-prune", "dense"]
"""main: the IMP level itself (or the transferred ticket); the rest are controls."""


class ControlsSpec(ApiModel):
    """Control branches that show whether a ticket is a ticket."""

    branches: list[ControlBranch] = Field(
        default_factory=list,
        json_schema_extra={"uniqueItems": True},
        description=(
            "random-reinit: the level's mask with a fresh random init; random-prune: a random "
            "mask with the same density in every layer, trained from the rewind weights."
        ),
    )
    levels: list[int] | None = Field(
        None,
        json_schema_extra={"uniqueItems": True},
        description="Pruned levels (>= 1) that get the control branches; every level when absent.",
    )

    @field_validator("levels")
    @classmethod
    def _positive_levels(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(level < 1 for level in value):
            raise ValueError("control levels are pruned levels, >= 1")
        return value


SearchMethod = Literal["imp", "gradual", "short-imp"]


class SearchSpec(ApiModel):
    """How the mask is searched for (spec.pruning.search). The final ticket is always trained
    in full from the rewind point, like an IMP level, beside the same control branches."""

    method: SearchMethod = Field(
        "imp",
        description=(
            "imp: plain IMP, one full training per level (level L prunes level L-1's final weights); "
            "gradual: level 0 trains the dense network, level 1 (the search) trains only the last "
            "search.epochs epochs of the schedule from level 0's final weights while pruning them "
            "step by step (IMP's densities at spec.pruning.fraction, global magnitude) down to the "
            "sparsest of search.densities, and levels 2, 3, ... train one ticket per density in full "
            "from the rewind point with the mask the search had at that density; "
            "short-imp: IMP with large steps and short retraining: levels 1 to S train only "
            "search.epochs epochs from the rewind point, each with the mask pruned from the level "
            "before (IMP's densities at spec.pruning.fraction, and search.densities), then one level "
            "per ticket trains its mask in full."
        ),
    )
    densities: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description=(
            "gradual, short-imp: densities of the tickets trained in full, in decreasing order (the "
            "levels after the search); default: the density spec.pruning.levels reaches at "
            "spec.pruning.fraction."
        ),
    )
    epochs: int = Field(
        2,
        ge=1,
        le=10000,
        description=(
            "gradual: epochs of the search run; prune steps are spread evenly over its first three "
            "quarters, the last quarter trains the sparsest mask. short-imp: epochs of each search level."
        ),
    )
    start: Literal["trained", "rewind"] = Field(
        "trained",
        description=(
            "gradual: where the search starts. trained: level 0's final weights, over the schedule's "
            "last search.epochs epochs (prune and fine-tune); rewind: the rewind point, over the "
            "search.epochs epochs of the schedule from there (the mask forms while the network first "
            "learns, as early-bird tickets do)."
        ),
    )

    @field_validator("densities")
    @classmethod
    def _decreasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and value != sorted(set(value), reverse=True):
            raise ValueError("densities must be strictly decreasing")
        return value


SEARCH_LEVEL = 1
"""gradual search: the level that searches the mask (level 0 is dense, tickets follow it);
short-imp: the first of its short levels."""


class PruningSpec(ApiModel):
    """Iterative magnitude pruning with rewinding."""

    strategy: Literal["global-magnitude"] = Field(
        "global-magnitude",
        description="Remove the smallest-magnitude weights across all conv and linear layers.",
    )
    fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of the remaining weights removed at each level."
    )
    levels: int | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Pruned levels after level 0 (the level budget): default 10 for a search, 0 for a "
            "transfer run (spec.ticket), which then trains the transferred ticket once."
        ),
    )
    rewind_to: str = Field(
        "6ep",
        pattern=REWIND_PATTERN,
        description="Rewind point: 6ep (epochs), 500it (steps), or 0 (the initial weights).",
    )
    rewind: Literal["weights", "learning-rate"] = Field(
        "weights",
        description=(
            "weights: surviving weights reset to the rewind point, schedule resumes there; "
            "learning-rate: keep the trained weights, replay the whole schedule."
        ),
    )
    ignore_layers: list[str] = Field(
        default_factory=list,
        description="Module names (glob patterns) never pruned, e.g. conv1, fc.",
    )
    match_tolerance: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Top-1 points below dense that still count as matching (picks the best ticket).",
    )
    stop: StopRules = Field(default_factory=StopRules, description="Early stop rules.")
    controls: ControlsSpec = Field(default_factory=ControlsSpec, description="Control branches.")
    search: SearchSpec = Field(
        default_factory=SearchSpec,
        description="How the mask is searched for: plain IMP (default) or a cheaper gradual search.",
    )

    @property
    def gradual(self) -> bool:
        return self.search.method == "gradual"

    @property
    def short_imp(self) -> bool:
        return self.search.method == "short-imp"

    @property
    def searching(self) -> bool:
        """A search method other than plain IMP: search levels, then one full level per ticket."""
        return self.search.method != "imp"

    def search_levels(self) -> int:
        """Levels between the dense level 0 and the first ticket level: gradual 1; short-imp one
        per density of the search but the last (its mask is pruned from the last one's weights)."""
        if self.gradual:
            return 1
        if self.short_imp:
            return len(self.search_densities()) - 1
        return 0

    def ticket_densities(self) -> list[float]:
        """gradual: the densities of the tickets trained in full (levels 2, 3, ...)."""
        if self.search.densities is not None:
            return list(self.search.densities)
        return [self.density(self.levels if self.levels is not None else 10)]

    def search_densities(self) -> list[float]:
        """gradual: the density after each prune step of the search run, decreasing: IMP's
        densities at `fraction` down to the sparsest ticket (but those within fraction / 2 of a
        ticket's, relative to it), and every ticket's density."""
        targets = self.ticket_densities()
        near = self.fraction / 2
        steps = {self.density(level) for level in range(1, self.levels_to_reach(targets[-1]) + 1)}
        steps = {d for d in steps if d > targets[-1] and all(abs(d - t) > near * t for t in targets)}
        return sorted(steps | set(targets), reverse=True)

    def level_density(self, level: int) -> float:
        """Expected density of main level `level` of a search (either method)."""
        if not self.searching or level == 0:
            return self.density(level)
        densities, searched = self.ticket_densities(), self.search_levels()
        if self.gradual and level == SEARCH_LEVEL:
            return densities[-1]
        if level <= searched:
            return self.search_densities()[level - 1]
        return densities[min(level - searched, len(densities)) - 1]

    def is_ticket_level(self, level: int) -> bool:
        """A level whose network trains in full from the rewind point (a ticket candidate):
        every pruned IMP level; a search's levels after its search levels."""
        return level >= 1 and level > self.search_levels()

    def density(self, level: int, start: float = 1.0) -> float:
        """Expected density after `level` levels from `start`: start * (1 - fraction) ** level."""
        return start * (1.0 - self.fraction) ** level

    def levels_to_reach(self, density: float) -> int:
        """Smallest level whose expected density is at or below `density`."""
        return max(0, math.ceil(math.log(density) / math.log(1.0 - self.fraction) - 1e-9))

    def rewind_point(self) -> tuple[int, Literal["ep", "it"]]:
        if self.rewind_to == "0":
            return 0, "it"
        match = re.fullmatch(r"([0-9]+)(ep|it)", self.rewind_to)
        assert match, self.rewind_to  # the pattern guarantees it
        unit: Literal["ep", "it"] = "ep" if match.group(2) == "ep" else "it"
        return int(match.group(1)), unit


class Toleration(ApiModel):
    """A pod toleration, as in core/v1."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class ResourcesSpec(ApiModel):
    """What one level's PyTorchJob asks the cluster for."""

    image: str | None = Field(
        None,
        min_length=1,
        description="Trainer container image (default: the operator's, chart value workloads.trainerImage).",
    )
    gpus_per_pod: int = Field(4, ge=0, le=16, description="GPUs per pod (0: CPU training).")
    pods: int = Field(1, ge=1, le=64, description="Pods per level (1 master + pods-1 workers).")
    cpu: str = Field("16", pattern=QUANTITY_PATTERN, description="CPU request per pod.")
    memory: str = Field("64Gi", pattern=QUANTITY_PATTERN, description="Memory request per pod.")
    shm_size: str = Field(
        "16Gi", pattern=QUANTITY_PATTERN, description="Size of /dev/shm (data-loader workers)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Pod node selector (default for GPU pods: the operator's workloads.gpuNodeSelector).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Pod tolerations (default for GPU pods: the operator's workloads.gpuTolerations).",
    )
    priority_class_name: str | None = Field(None, description="Pod priority class.")
    queue_name: str | None = Field(
        None,
        pattern=LABEL_VALUE_PATTERN,
        max_length=63,
        description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name).",
    )
    max_parallel_jobs: int = Field(
        1,
        ge=1,
        le=64,
        description="Training jobs of this run at once (control branches beside the next level).",
    )

    cpu_processes_per_pod: int = Field(
        1,
        ge=1,
        le=64,
        description="Trainer processes per pod without GPUs (gloo); with GPUs, one per GPU.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment of the trainer containers, e.g. NCCL settings for a multi-pod run "
            "(NCCL_SOCKET_IFNAME, NCCL_IB_HCA, NCCL_DEBUG)."
        ),
    )
    extra_resources: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extended resources per trainer pod, requested and limited alike, e.g. an RDMA device "
            "from its device plugin (rdma/rdma_shared_device_a: '1'), so NCCL can use InfiniBand "
            "or RoCE instead of TCP."
        ),
    )
    ipc_lock: bool = Field(
        False,
        description=(
            "Give the trainer container the IPC_LOCK capability (every other one stays dropped): "
            "RDMA pins the memory it registers, which NCCL over InfiniBand/RoCE needs."
        ),
    )

    @property
    def processes_per_pod(self) -> int:
        return self.gpus_per_pod if self.gpus_per_pod > 0 else self.cpu_processes_per_pod

    @property
    def world_size(self) -> int:
        return self.pods * self.processes_per_pod


class StorageSpec(ApiModel):
    """The shared volume that holds the run directory."""

    claim_name: str = Field(
        "lth-data",
        min_length=1,
        max_length=253,
        description="ReadWriteMany PersistentVolumeClaim mounted in every pod.",
    )
    mount_path: str = Field("/mnt/lth", pattern=r"^/.*", description="Where the volume is mounted.")
    sub_path: str = Field("", description="Sub-path of the volume to mount (Kubernetes subPath).")
    run_as_user: int | None = Field(
        None,
        ge=1,
        description=(
            "uid of every pod that writes the volume (Spark driver and executors, trainers): one "
            "owner, as volumes such as NFS ignore fsGroup (default: the operator's workloads.runAsUser)."
        ),
    )
    run_as_group: int | None = Field(
        None, ge=0, description="gid of those pods (default: the operator's workloads.runAsGroup)."
    )


class ChildRetry(ApiModel):
    backoff_limit: int = Field(
        2, ge=0, le=20, description="Times a failed child is created again before the run fails."
    )


class RetrySpec(ApiModel):
    """Retries per child kind."""

    preprocessing: ChildRetry = Field(default_factory=ChildRetry)
    training: ChildRetry = Field(default_factory=ChildRetry)
    export: ChildRetry = Field(
        default_factory=ChildRetry,
        description="The export Job; a failed export never fails the run (condition Exported False).",
    )


S3_URL_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"


class ExportSpec(ApiModel):
    """Where the exported ticket goes besides runs/<name>/ticket/ on the run's volume."""

    url: str | None = Field(
        None,
        pattern=S3_URL_PATTERN,
        description=(
            "s3://bucket/prefix: the export Job uploads the ticket there (any S3-compatible store); "
            "`lth ticket fetch` and spec.ticket.url read it back, checking every file's SHA-256."
        ),
    )
    secret_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description=(
            "Secret in the run's namespace whose keys become the export Job's environment: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN, AWS_REGION, "
            "AWS_ENDPOINT_URL (none: the pod's own credentials, e.g. IRSA)."
        ),
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The S3 endpoint of MinIO, Ceph and the like (else AWS_ENDPOINT_URL, else AWS).",
    )


TicketControl = Literal["dense", "random-prune", "random-reinit"]
DEFAULT_TICKET_CONTROLS: tuple[TicketControl, ...] = ("dense", "random-prune")


class TicketSpec(ApiModel):
    """Start from a ticket found earlier (transfer) instead of searching from a dense network."""

    run: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="A finished LotteryTicketRun in the same namespace whose ticket to transfer.",
    )
    level: int | None = Field(
        None, ge=0, description="Which level of spec.ticket.run; its best ticket (status.best) when absent."
    )
    path: str | None = Field(
        None,
        min_length=1,
        description=(
            "Or an exported ticket directory (ticket.json, mask.safetensors, rewind.safetensors, "
            "final.safetensors): an absolute path, or relative to the storage root."
        ),
    )
    url: str | None = Field(
        None,
        pattern=r"^(https?|s3)://",
        description=(
            "Or the http(s):// or s3:// URL of an exported ticket directory (spec.export.url of its "
            "run): the trainer downloads ticket.json and the files it lists, and checks their SHA-256."
        ),
    )
    secret_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description=(
            "For an s3:// url: a Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL...) become the trainer pods' environment (none: the pods' own identity)."
        ),
    )
    weights: Literal["rewind", "final"] = Field(
        "rewind",
        description=(
            "rewind: fine-tune from the ticket's rewind weights (the lottery-ticket way); "
            "final: from the weights the source level ended with."
        ),
    )
    head: Literal["reinit", "keep"] = Field(
        "reinit",
        description=(
            "reinit: a fresh classifier head for the target's classes; keep: the ticket's head "
            "(the class counts must be equal)."
        ),
    )
    prune_head: bool = Field(
        False,
        description=(
            "With head reinit: prune the new head at random to the density of the ticket's head; "
            "false leaves it dense."
        ),
    )
    controls: list[TicketControl] = Field(
        default_factory=lambda: list(DEFAULT_TICKET_CONTROLS),
        json_schema_extra={"uniqueItems": True},
        description=(
            "What the transferred ticket is compared with on the target, all from a fresh init: "
            "dense (no mask), random-prune (a random mask with the ticket's density in every "
            "layer), random-reinit (the ticket's mask)."
        ),
    )


class RunSpec(ApiModel):
    """What a user writes under `spec:` of a LotteryTicketRun."""

    dataset: DatasetSpec = Field(
        description="Input data (with spec.ticket: the target data set the ticket is transferred to)."
    )
    ticket: TicketSpec | None = Field(
        None, description="Transfer: train a ticket found earlier on this data set instead of searching."
    )
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    pruning: PruningSpec = Field(default_factory=PruningSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    export: ExportSpec = Field(default_factory=ExportSpec)

    @property
    def level_budget(self) -> int:
        """Pruned levels after level 0: spec.pruning.levels, else 10 (search) or 0 (transfer)."""
        if self.pruning.searching and self.ticket is None:
            return self.pruning.search_levels() + len(self.pruning.ticket_densities())
        if self.pruning.levels is not None:
            return self.pruning.levels
        return 0 if self.ticket is not None else 10

    def control_branches(self, level: int) -> list[Branch]:
        """The control branches of `level`: the transfer controls at a transfer run's level 0,
        spec.pruning.controls at pruned levels."""
        if level == 0:
            return list(self.ticket.controls) if self.ticket is not None else []
        controls = self.pruning.controls
        if not self.pruning.is_ticket_level(level):
            return []
        if controls.levels is not None and level not in controls.levels:
            return []
        return list(controls.branches)


MUTABLE_SPEC_FIELDS: tuple[tuple[str, ...], ...] = (
    ("resources",),
    ("retry",),
    ("pruning", "levels"),
    ("pruning", "stop"),
    ("pruning", "controls"),
    ("pruning", "match_tolerance"),
    ("ticket", "controls"),
    ("export",),
)
"""Spec fields that may change while a run is in progress; every other field is frozen at start."""


# --------------------------------------------------------------------------- status

Phase = Literal["Pending", "Preprocessing", "Training", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})

ChildPhase = Literal["Pending", "Running", "Retrying", "Succeeded", "Failed"]


ConditionType = Literal["SpecAccepted", "TicketResolved", "Progressing", "Succeeded", "Failed", "Exported"]
"""The run's conditions: the spec was accepted; a transfer's ticket was found; the run is
moving (or why it waits); it ended with a ticket or the level budget; it failed; its ticket
and report were exported (False while the export Job runs, or when it failed for good)."""
SpecReason = Literal["Accepted", "InvalidSpec", "FrozenFieldChanged"]
TicketReason = Literal["Resolved", "TicketNotFound", "TicketNotReady", "TicketMismatch", "TicketInvalid"]
StuckReason = Literal[
    "Unschedulable",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "CreateContainerConfigError",
    "WaitingForQueue",
]
"""Why a child's pods cannot run (Progressing stays True with this reason while it lasts)."""
ProgressReason = Literal["Preprocessing", "Training", "LevelsDone", "Succeeded", "Failed"] | StuckReason
SucceededReason = Literal["TicketFound", "LevelsDone"]
TicketRefusal = Literal["TicketNotFound", "TicketNotReady", "TicketMismatch", "TicketInvalid"]
FailureReason = Literal["InvalidSpec", "PreprocessingFailed", "LevelFailed", "ChildDeleted"] | TicketRefusal
ExportReason = Literal["Exporting", "Exported", "ExportFailed"]
ConditionReason = SpecReason | TicketReason | ProgressReason | SucceededReason | FailureReason | ExportReason


class Condition(ApiModel):
    """A condition, as the Kubernetes API conventions define it."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class LevelResult(ApiModel):
    """What a finished level reports (result.json, termination message)."""

    level: int = Field(ge=0)
    branch: Branch = "main"
    density: Fraction
    top1: Percent
    top5: Percent | None = None
    loss: float | None = None
    epochs: int | None = Field(None, ge=0)
    images_per_second: float | None = Field(None, ge=0)
    duration_seconds: float | None = Field(None, ge=0)
    trained_epochs: float | None = Field(
        None,
        ge=0,
        description="Passes over the training split this job trained (from its start step to the end).",
    )


class ChildStatus(ApiModel):
    """One child (SparkApplication or PyTorchJob) as the run tracks it."""

    name: str
    phase: ChildPhase = "Pending"
    attempts: int = Field(1, ge=1, description="Attempt of the current child object, from 1.")
    start_time: datetime | None = None
    finish_time: datetime | None = None
    message: str | None = None


class EpochProgress(ApiModel):
    """Where a running level stands: its trainer's latest epoch line (`lth.progress`)."""

    epoch: int = Field(ge=0)
    epochs: int = Field(ge=1)
    top1: Percent | None = Field(None, description="Top-1 after that epoch.")
    images_per_second: float | None = Field(None, ge=0, description="Training throughput of that epoch.")
    estimated_finish: datetime | None = Field(
        None, description="When the level should end, at the pace of its epochs so far."
    )


class LevelStatus(ChildStatus):
    """One row of the per-level table."""

    level: int = Field(ge=0)
    branch: Branch = "main"
    density: Fraction | None = None
    top1: Percent | None = None
    top5: Percent | None = None
    loss: float | None = None
    duration_seconds: float | None = Field(None, ge=0)
    cost: float | None = Field(
        None, ge=0, description="What this job trained, in dense-run equivalents (lth.cost)."
    )
    progress: EpochProgress | None = Field(None, description="While it runs: its latest epoch.")


class ExportStatus(ChildStatus):
    """The export Job `<run>-export`: the ticket and report written after the search ended."""

    path: str | None = Field(None, description="The exported ticket directory, as the pods see it.")
    url: str | None = Field(None, description="Where it was uploaded (spec.export.url).")


class BestTicket(ApiModel):
    level: int = Field(ge=0)
    density: Fraction
    top1: Percent
    summary: str = Field(description="One line for kubectl, e.g. 'L7 21.0% 75.3%'.")


class CostStatus(ApiModel):
    """What the run trained, in dense-run equivalents: epochs x fraction of the training data,
    relative to one dense run of spec.training.epochs (lth.cost)."""

    search: float = Field(0.0, ge=0, description="Every main level: the search and its tickets' training.")
    controls: float = Field(0.0, ge=0, description="The control branches, shown apart.")
    ticket: float | None = Field(
        None,
        ge=0,
        description=(
            "What the best ticket took: the levels its mask comes from and its own full training, "
            "the dense level 0 included, controls and other tickets not."
        ),
    )


class TicketStatus(ApiModel):
    """The transferred ticket, resolved once at start (a later change to its source does not matter)."""

    source: str = Field(description="What it is, in words: 'run digits-0to4 level 5' or 'directory ...'.")
    run: str | None = Field(None, description="The source run, for spec.ticket.run.")
    level: int | None = Field(None, ge=0, description="The source run's level.")
    path: str | None = Field(None, description="The ticket directory, for spec.ticket.path.")
    url: str | None = Field(None, description="The ticket's URL, for spec.ticket.url.")
    density: Fraction | None = Field(None, description="Density of the ticket (None: not known yet).")
    top1: Percent | None = Field(None, description="Top-1 of the ticket on its source data.")
    architecture: str | None = None


class RunStatus(ApiModel):
    """What the controller writes under `status:`; every field derives from the children."""

    phase: Phase = "Pending"
    level: int | None = Field(None, description="Current (highest started) main level.")
    density: Fraction | None = Field(None, description="Density of the current level.")
    top1: Percent | None = Field(None, description="Top-1 of the latest finished main level.")
    dense_top1: Percent | None = None
    best: BestTicket | None = None
    ticket: TicketStatus | None = Field(None, description="The transferred ticket (spec.ticket).")
    cost: CostStatus | None = Field(None, description="What the run trained, in dense-run equivalents.")
    preprocessing: ChildStatus | None = None
    levels: list[LevelStatus] = Field(default_factory=list)
    progress: str | None = Field(
        None, description="The running main level and its epoch, for kubectl: 'L7 37/90'."
    )
    export: ExportStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    accepted_spec: RunSpec | None = Field(
        None, description="The spec as accepted at start; frozen fields are kept from it."
    )

    def level_entry(self, level: int, branch: Branch = "main") -> LevelStatus | None:
        return next((e for e in self.levels if e.level == level and e.branch == branch), None)

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


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
