"""What every child object of a run shares: its name, labels, attempt and owner, the storage
volume, the security context of its pods, and the helpers that read objects back.

The children are pure functions of the spec (one module per kind: `spark_application`,
`pytorchjob`, `export_job`): the kopf handlers create what they return and feed what they
observe through their `observe_*`, so every field and every state mapping is testable
without an API server. Retries are the planner's (it recreates a failed child with the
next attempt number), so the children themselves never restart. Cluster-wide defaults
(images, pull secrets, GPU placement, the uid and gid the pods run as) come from
`lth.api.defaults.WorkloadDefaults`; the spec overrides each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lth import api
from lth.api import Branch, LevelResult, RunSpec, StabilityPart, StabilityResult
from lth.api.defaults import WorkloadDefaults
from lth.api.observed import ChildKind, Stuck

CHILD_RESOURCES: dict[ChildKind, tuple[str, str, str]] = {
    "SparkApplication": ("sparkoperator.k8s.io", "v1beta2", "sparkapplications"),
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
}
"""(group, version, plural) of each child kind, as the custom-objects API and kopf name them."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "lth-operator"
LABEL_RUN = "lth.dev/run"
LABEL_LEVEL = "lth.dev/level"
LABEL_BRANCH = "lth.dev/branch"
LABEL_STABILITY_POINT = "lth.dev/stability-point"
LABEL_STABILITY_PART = "lth.dev/stability-part"
"""rewindTo auto: a job of the instability analysis (its ladder point; copy a, b, or the path)."""
ANNOTATION_ATTEMPT = "lth.dev/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
POD_LABEL_OF: dict[ChildKind, str] = {
    "SparkApplication": "sparkoperator.k8s.io/app-name",
    "PyTorchJob": "training.kubeflow.org/job-name",
    "TrainJob": "jobset.sigs.k8s.io/jobset-name",
    "Job": "batch.kubernetes.io/job-name",
}
"""The label whose value is the child's name on each of its pods: the Spark operator puts it on
the driver and executors (pkg/common/spark.go, `--conf spark.kubernetes.*.label.*`), the
training operator on every replica pod (`GenLabels`, pkg/controller.v1/common/job_controller.go),
JobSet on the pods of a TrainJob's JobSet, which has the TrainJob's name (`labelAndAnnotateObject`,
kubernetes-sigs/jobset pkg/controllers/jobset_controller.go), the Job controller on its pods
(`batch.kubernetes.io/job-name`, pkg/apis/batch/types.go)."""
TRAINER_CONTAINER = "pytorch"
"""The training operator finds the rendezvous port and the job's exit status on this container name."""
STORAGE_VOLUME = "lth-data"
SHM_VOLUME = "dshm"
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""The keys of spec.tracking.mlflow.secretName that MLflow's client reads from its environment."""


def tracking_env(spec: RunSpec) -> list[dict[str, Any]]:
    """The MLflow credentials of the trainer and export containers: each key of the Secret by
    reference (optional: a user and password, or a token), never a value in the object."""
    mlflow = spec.tracking.mlflow
    if mlflow is None or mlflow.secret_name is None:
        return []
    refs = [{"name": mlflow.secret_name, "key": key, "optional": True} for key in MLFLOW_SECRET_KEYS]
    return [{"name": ref["key"], "valueFrom": {"secretKeyRef": ref}} for ref in refs]


@dataclass(frozen=True)
class RunRef:
    """The LotteryTicketRun that owns the children."""

    name: str
    namespace: str
    uid: str


def owner_reference(run: RunRef) -> dict[str, Any]:
    """The run as controller owner: deleting the run deletes its children."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def queue_labels(spec: RunSpec) -> dict[str, str]:
    """The Kueue queue label every child (and every pod of it we label) carries with a queue:
    Kueue manages batch/v1 Jobs and pods by it (and suspends them without it under
    manageJobsWithoutQueueName)."""
    queue = spec.resources.queue_name
    return {LABEL_KUEUE_QUEUE: queue} if queue else {}


def child_metadata(
    run: RunRef, name: str, attempt: int, extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: run.name, **(extra_labels or {})}
    return {
        "name": name,
        "namespace": run.namespace,
        "labels": labels,
        "annotations": {ANNOTATION_ATTEMPT: str(attempt)},
        "ownerReferences": [owner_reference(run)],
    }


def storage_volume(spec: RunSpec) -> dict[str, Any]:
    return {"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": spec.storage.claim_name}}


def storage_mount(spec: RunSpec) -> dict[str, Any]:
    mount = {"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path}
    if spec.storage.sub_path:
        mount["subPath"] = spec.storage.sub_path
    return mount


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def pod_security(spec: RunSpec, defaults: WorkloadDefaults) -> dict[str, Any]:
    """Every pod that writes the run directory runs as one uid and gid, set here, not by the image.

    A ReadWriteMany volume such as NFS ignores fsGroup, so pods of different users (the
    apache/spark image's 185 and a trainer's 10001, say) could not write each other's
    folders. An explicit runAsUser also admits the training operator's init container
    (`init-pytorch`, alpine, no USER), which runAsNonRoot alone would refuse as root.
    """
    storage = spec.storage
    group = storage.run_as_group if storage.run_as_group is not None else defaults.run_as_group
    return {
        "runAsNonRoot": True,
        "runAsUser": storage.run_as_user or defaults.run_as_user,
        "runAsGroup": group,
        "fsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --------------------------------------------------------------------------- level jobs


def trainer_resources(spec: RunSpec) -> dict[str, Any]:
    """A trainer pod's requests, and its GPUs and extended resources as limits."""
    res = spec.resources
    resources: dict[str, Any] = {"requests": {"cpu": res.cpu, "memory": res.memory}}
    limits = dict(res.extra_resources)  # e.g. RDMA devices for NCCL
    if res.gpus_per_pod > 0:
        limits["nvidia.com/gpu"] = str(res.gpus_per_pod)
    if limits:
        # Extended resources: the request defaults to the limit.
        resources["limits"] = limits
    return resources


def trainer_security(spec: RunSpec) -> dict[str, Any]:
    """The trainer container's securityContext: every capability dropped, IPC_LOCK added back
    for RDMA (which pins the memory it registers) when asked."""
    security = container_security()
    if spec.resources.ipc_lock:
        security["capabilities"]["add"] = ["IPC_LOCK"]
    return security


def trainer_volumes(spec: RunSpec) -> list[dict[str, Any]]:
    return [
        storage_volume(spec),
        # DataLoader workers pass batches through shared memory; the default 64 MiB is far too small.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
    ]


def trainer_mounts(spec: RunSpec) -> list[dict[str, Any]]:
    return [storage_mount(spec), {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]


def trainer_placement(spec: RunSpec, defaults: WorkloadDefaults) -> dict[str, Any]:
    """nodeSelector, tolerations and imagePullSecrets of a trainer pod: the spec's, else the
    cluster's GPU placement for GPU pods; the cluster's pull secrets."""
    res = spec.resources
    gpus = res.gpus_per_pod > 0
    node_selector = res.node_selector or (defaults.gpu_node_selector if gpus else {})
    tolerations = res.tolerations or (defaults.gpu_tolerations if gpus else [])
    placement: dict[str, Any] = {}
    if node_selector:
        placement["nodeSelector"] = dict(node_selector)
    if tolerations:
        placement["tolerations"] = [t.to_wire() for t in tolerations]
    if defaults.image_pull_secrets:
        placement["imagePullSecrets"] = [{"name": name} for name in defaults.image_pull_secrets]
    return placement


def escape_expansion(arg: str) -> str:
    """Kubernetes expands `$(VAR)` in command lines; `$$` keeps a user's `$` literal."""
    return arg.replace("$", "$$")


# --------------------------------------------------------------------------- reading back


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def attempt_of(obj: Mapping[str, Any]) -> int:
    """The planner's attempt number; a child without a readable one counts as attempt 1."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ATTEMPT)
    if not isinstance(raw, str) or not raw.isdigit():
        return 1
    return max(int(raw), 1)


def termination_message(pod: Mapping[str, Any], container: str) -> str | None:
    """The trainer container's termination message; None when it has none."""
    for status in as_list(as_mapping(pod.get("status")).get("containerStatuses")):
        if as_mapping(status).get("name") != container:
            continue
        message = as_mapping(as_mapping(status.get("state")).get("terminated")).get("message")
        return message if isinstance(message, str) else None
    return None


def level_result_from_pod(
    pod: Mapping[str, Any], container: str, level: int | None = None, branch: Branch | None = None
) -> LevelResult | None:
    """The result in the trainer container's termination message; None when absent, garbled or
    not this level's."""
    message = termination_message(pod, container)
    try:
        result = LevelResult.model_validate(json.loads(message)) if message is not None else None
    except (ValueError, ValidationError):
        return None
    if result is None or (level is not None and result.level != level):
        return None
    if branch is not None and result.branch != branch:
        return None
    return result


def stability_result_from_pod(
    pod: Mapping[str, Any], container: str, point: int, part: StabilityPart
) -> StabilityResult | None:
    """A job of the instability analysis' result, in its trainer container's termination message."""
    message = termination_message(pod, container)
    try:
        result = StabilityResult.model_validate(json.loads(message)) if message is not None else None
    except (ValueError, ValidationError):
        return None
    return result if result is not None and (result.point, result.part) == (point, part) else None


def waiting_for_queue(kind: ChildKind, name: str, obj: Mapping[str, Any]) -> Stuck:
    """A job suspended for Kueue: why it waits, as far as the job itself tells
    (`lth.cluster.queues` reads its Workload for the rest)."""
    queue = as_mapping(as_mapping(obj.get("metadata")).get("labels")).get(LABEL_KUEUE_QUEUE)
    if isinstance(queue, str) and queue:
        detail = f"suspended until Kueue admits it from queue {queue!r}"
    else:
        detail = f"suspended with no Kueue queue (label {LABEL_KUEUE_QUEUE}): nothing will admit it"
    return Stuck("WaitingForQueue", f"{kind} {name}", detail)


def parse_time(stamp: Any) -> datetime | None:
    """An RFC 3339 timestamp (a Time or a MicroTime) as the API writes it; None when it is not one."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def event_time(event: Mapping[str, Any]) -> datetime:
    """When an event last happened, as either events API wrote it: events.k8s.io/v1 recorders
    (Trainer's, say) leave the core/v1 timestamps empty and set eventTime and series."""
    series = as_mapping(event.get("series"))
    for stamp in (
        event.get("lastTimestamp"),
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        as_mapping(event.get("metadata")).get("creationTimestamp"),
    ):
        parsed = parse_time(stamp)
        if parsed is not None:
            return parsed
    return datetime.min.replace(tzinfo=UTC)


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def true_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == type_
            and condition.get("status") == "True"
        ):
            return condition
    return None
