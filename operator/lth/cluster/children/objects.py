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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lth import api
from lth.api import RunSpec
from lth.api.defaults import WorkloadDefaults
from lth.api.observed import ChildKind

CHILD_RESOURCES: dict[ChildKind, tuple[str, str, str]] = {
    "SparkApplication": ("sparkoperator.k8s.io", "v1beta2", "sparkapplications"),
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
}
"""(group, version, plural) of each child kind, as the custom-objects API and kopf name them."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "lth-operator"
LABEL_RUN = "lth.dev/run"
LABEL_LEVEL = "lth.dev/level"
LABEL_BRANCH = "lth.dev/branch"
ANNOTATION_ATTEMPT = "lth.dev/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
POD_LABEL_OF: dict[ChildKind, str] = {
    "SparkApplication": "sparkoperator.k8s.io/app-name",
    "PyTorchJob": "training.kubeflow.org/job-name",
    "Job": "batch.kubernetes.io/job-name",
}
"""The label whose value is the child's name on each of its pods: the Spark operator puts it on
the driver and executors (pkg/common/spark.go, `--conf spark.kubernetes.*.label.*`), the
training operator on every replica pod (`GenLabels`, pkg/controller.v1/common/job_controller.go),
the Job controller on its pods (`batch.kubernetes.io/job-name`, pkg/apis/batch/types.go)."""
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


# --------------------------------------------------------------------------- PyTorchJob


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
