"""What a user writes under `spec:` of a LotteryTicketRun: the one source of truth.

The CRD schema, `lth validate`, the trainer's and the Spark job's view of a run and the docs
all come from these models (spec.pruning is in lth.api.pruning, spec.model in lth.api.networks,
spec.dataset in lth.api.data_manifest beside the manifest it must match)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lth.api.branches import DEFAULT_TICKET_CONTROLS, Branch, TicketControl
from lth.api.data_manifest import DatasetSpec
from lth.api.networks import ModelSpec
from lth.api.pruning import PruningSpec
from lth.api.search import METHODS
from lth.api.wire import (
    DNS_SUBDOMAIN_PATTERN,
    MEMORY_PATTERN,
    QUANTITY_PATTERN,
    QUEUE_NAME_PATTERN,
    REDACTED,
    ApiModel,
    EnvValue,
    Toleration,
)

# --------------------------------------------------------------------------- spec


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


LOADER_PREFETCH_BATCHES = 4
"""Batches each data-loader worker keeps ready (the trainer's DataLoader prefetch_factor): they
sit in /dev/shm, so spec.resources.shmSize must hold them (lth.validation checks it)."""


class TrainingSpec(ApiModel):
    """How one level trains. Epochs and milestones count passes over the training split."""

    epochs: int = Field(90, ge=1, le=10000, description="Epochs per level.")
    batch_size: int = Field(
        1024, ge=1, le=1 << 20, description="Global batch size, summed over all processes."
    )
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
            "Train-time augmentation: random-resized-crop of the stored image with torchvision's "
            "defaults (scale 0.08-1, ratio 3/4-4/3) plus horizontal flip, as the ImageNet "
            "references do; none for digits and other data that flips would change."
        ),
    )
    crop_size: int | None = Field(
        None,
        ge=16,
        le=1024,
        description=(
            "Side of the crops the network sees, pixels: random-resized crops in training, the "
            "center crop in evaluation (of whole images: the center of a short side resized to "
            "cropSize / 0.875, torchvision's reference). Default, from what the data's manifest "
            "says was stored: 87.5 % of the short side for center-crop and whole data (224 of "
            "256), at most the stored size; the whole image for squashed data."
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


TrainingApi = Literal["PyTorchJob", "TrainJob"]
"""What trains a level on a cluster: training operator v1 or Kubeflow Trainer v2."""


class ResourcesSpec(ApiModel):
    """What one level's training job (PyTorchJob or TrainJob) asks the cluster for."""

    training_api: TrainingApi | None = Field(
        None,
        description="What trains each level: PyTorchJob (Kubeflow training operator v1) or TrainJob "
        "(Kubeflow Trainer v2). Default: the chart's workloads.trainingApi. Fixed once the run started.",
    )

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
        pattern=QUEUE_NAME_PATTERN,
        max_length=63,
        description=(
            "Kueue LocalQueue (label kueue.x-k8s.io/queue-name) of every child: the levels, the "
            "SparkApplication and its pods, the export Job. A lowercase DNS-1123 subdomain (Kueue's "
            "rule) of at most 63 characters (a label value). Kueue manages kubeflow.org/pytorchjob "
            "only where its integrations.frameworks lists it (off by default since Kueue v0.19)."
        ),
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
    env: dict[str, EnvValue] = Field(
        default_factory=dict,
        description=(
            "Extra environment of the trainer containers, e.g. NCCL settings for a multi-pod run "
            "(NCCL_SOCKET_IFNAME, NCCL_IB_HCA, NCCL_DEBUG): a plain value, which is shown wherever "
            "the spec is (never a secret), or {valueFrom: {secretKeyRef: {name, key}}}, a key of a "
            "Secret in the run's namespace (a token, a password). `lth run` takes those from its own "
            "environment."
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
    def level_kind(self) -> TrainingApi:
        """The kind of each level's job; PyTorchJob where nothing chose (the local runner)."""
        return self.training_api or "PyTorchJob"

    @property
    def plain_env(self) -> dict[str, str]:
        """The env entries written as values (what a local run passes on)."""
        return {name: value for name, value in self.env.items() if isinstance(value, str)}

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
        pattern=DNS_SUBDOMAIN_PATTERN,
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


class MlflowSpec(ApiModel):
    """An MLflow tracking server: one parent run per LotteryTicketRun, a nested run per level and branch."""

    tracking_uri: str = Field(
        pattern=r"^https?://[^/@\s]+(/\S*)?$",
        description="http(s) address of the tracking server, without credentials (see secretName).",
    )
    experiment_name: str = Field("lottery-tickets", min_length=1, description="Parent run's experiment.")
    secret_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Secret whose keys MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN, become the trainer and export pods' environment (`lth run`: its own)."
        ),
    )

    @field_validator("tracking_uri", mode="before")
    @classmethod
    def _no_credentials(cls, value: object) -> object:
        if isinstance(value, str) and "@" in value.partition("://")[2].partition("/")[0]:
            raise ValueError("credentials belong in a Secret (secretName), not in the URI")
        return value


class TrackingSpec(ApiModel):
    """Where the curves go besides progress.jsonl: TensorBoard files in runs/<name>/tensorboard/, MLflow."""

    mlflow: MlflowSpec | None = Field(None, description="Also log every level to an MLflow tracking server.")


class TicketSpec(ApiModel):
    """Start from a ticket found earlier (transfer) instead of searching from a dense network."""

    run: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "A finished LotteryTicketRun in the same namespace whose ticket to transfer (its name: "
            "never a path, so runs/<name>/ stays on the run's volume)."
        ),
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
        pattern=DNS_SUBDOMAIN_PATTERN,
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
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    def to_public_wire(self) -> dict[str, Any]:
        """The wire form as it may be shown and shipped (exported files, workload command lines,
        the export Job's environment): plain resources.env values as ***, Secret references kept;
        resources.trainingApi left out: it says where the levels ran (an operator fills it in
        from its chart), so the same levels ship the same bytes under `lth run` and either API."""
        wire = self.to_wire()
        wire.get("resources", {}).pop("trainingApi", None)
        env = wire.get("resources", {}).get("env")
        if env:
            wire["resources"]["env"] = {k: REDACTED if isinstance(v, str) else v for k, v in env.items()}
        return wire

    @property
    def level_budget(self) -> int:
        """Pruned levels after level 0, as the search method counts them: IMP's are
        spec.pruning.levels, else 10 (search) or 0 (transfer); a transfer run counts as IMP."""
        method = self.pruning.method if self.ticket is None else METHODS["imp"]
        return method.level_budget(self)

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
    ("tracking",),
)
"""Spec fields that may change while a run is in progress; every other field is frozen at start."""
FROZEN_WITHIN_MUTABLE: tuple[tuple[str, ...], ...] = (("resources", "training_api"),)
"""Frozen inside a mutable section: a running run's level jobs keep their kind."""
