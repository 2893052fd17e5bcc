"""The run's children as Kubernetes objects, and what the operator reads back from them.

Pure functions of the spec: the kopf handlers create what these return and feed
what they observe through `observe_*`, so every field and every state mapping
is testable without an API server. Retries are the planner's (it recreates a
failed child with the next attempt number), so the children themselves never
restart: SparkApplication restartPolicy Never, PyTorchJob replicas restartPolicy Never.
Cluster-wide defaults (images, pull secrets, GPU placement, the uid and gid the pods
run as) come from `lth.defaults.WorkloadDefaults`; the spec overrides each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from lth import api
from lth.api import Branch, LevelResult, RunSpec, RunStatus, StuckReason, TicketStatus
from lth.commands import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    SPARK_MAIN_IN_IMAGE,
    TERMINATION_LOG,
    TRAINER_MODULE,
    RunPaths,
    prep_arguments,
    trainer_arguments,
)
from lth.defaults import WorkloadDefaults
from lth.naming import export_name, level_job_name, prep_name
from lth.observed import ChildKind, ChildState, ObservedChild, Stuck

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"
PYTORCHJOB_API_VERSION = "kubeflow.org/v1"
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
JOB_API_VERSION = "batch/v1"
POD_LABEL_OF: dict[ChildKind, str] = {
    "SparkApplication": "sparkoperator.k8s.io/app-name",
    "PyTorchJob": "training.kubeflow.org/job-name",
    "Job": "batch.kubernetes.io/job-name",
}
"""The label whose value is the child's name on each of its pods: the Spark operator puts it on
the driver and executors (pkg/common/spark.go, `--conf spark.kubernetes.*.label.*`), the
training operator on every replica pod (`GenLabels`, pkg/controller.v1/common/job_controller.go),
the Job controller on its pods (`batch.kubernetes.io/job-name`, pkg/apis/batch/types.go)."""

SPARK_DRIVER_CONTAINER = "spark-kubernetes-driver"
"""Spark names the driver's container so; the Spark operator reads its exit code there."""
TRAINER_CONTAINER = "pytorch"
"""The training operator finds the rendezvous port and the job's exit status on this container name."""
PYTORCHJOB_PORT = 23456
"""The training operator's default master port (named `pytorchjob-port`), set so no webhook must add it."""
STORAGE_VOLUME = "lth-data"
SHM_VOLUME = "dshm"

CLEAN_POD_POLICY = "Running"
"""After the job ends, delete pods still running (stragglers holding GPUs after a failure)
but keep finished ones: the master pod's termination message carries the level's result.

No `runPolicy.backoffLimit`: on training-operator 1.8.1 to 1.9.3 a job past its backoff
limit has its pods deleted before it is marked Failed, whatever cleanPodPolicy says
(kubeflow/trainer issue 3419; `ReconcileJobs` in pkg/controller.v1/common/job.go), and
with limit 0 the first failed pod takes that path. Without a limit, a failed replica under
restartPolicy Never fails the job through `UpdateJobStatus`, which keeps the failed pods."""

SPARK_EXIT_CODE = re.compile(r"driver container failed with ExitCode: (-?[0-9]+)")
"""How the Spark operator words a failed driver in status.applicationState.errorMessage
(`updateDriverState`, internal/controller/sparkapplication/controller.go)."""

SPARK_RUNNING_STATES = frozenset({"RUNNING", "SUCCEEDING", "FAILING", "UNKNOWN"})
"""Spark operator states with a driver up. COMPLETED and FAILED are its only terminal states;
SUBMISSION_FAILED, PENDING_RERUN and the rest lead to one of those, so they count as Pending."""


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


def _metadata(
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


def _storage_volume(spec: RunSpec) -> dict[str, Any]:
    return {"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": spec.storage.claim_name}}


def _storage_mount(spec: RunSpec) -> dict[str, Any]:
    mount = {"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path}
    if spec.storage.sub_path:
        mount["subPath"] = spec.storage.sub_path
    return mount


def _container_security() -> dict[str, Any]:
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


def _spark_volume_conf(spec: RunSpec) -> dict[str, str]:
    """The storage claim as Spark's own volume settings: spark-submit mounts it in the driver and
    the executors, where `volumes`/`volumeMounts` would need the Spark operator's pod webhook."""
    conf: dict[str, str] = {}
    for role in ("driver", "executor"):
        prefix = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.{STORAGE_VOLUME}"
        conf[f"{prefix}.options.claimName"] = spec.storage.claim_name
        conf[f"{prefix}.mount.path"] = spec.storage.mount_path
        conf[f"{prefix}.mount.readOnly"] = "false"
        if spec.storage.sub_path:
            conf[f"{prefix}.mount.subPath"] = spec.storage.sub_path
    return conf


# --------------------------------------------------------------------------- SparkApplication


def spark_application(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    attempt: int,
    service_account: str,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The SparkApplication `<run>-prep` that writes the shards and the data manifest.

    `service_account` runs the driver (it creates the executor pods); the executors
    keep the namespace default, as they need no API access. The pods' uid and gid
    reach them through the Spark operator's pod webhook (on by default); without it
    they run as the image's user, which the project's images set to the default uid.
    """
    defaults = defaults or WorkloadDefaults()
    prep = spec.preprocessing
    side = {
        "labels": {LABEL_RUN: run.name},
        "podSecurityContext": pod_security(spec, defaults),
        "securityContext": _container_security(),
    }
    app: dict[str, Any] = {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": _metadata(run, prep_name(run.name), attempt),
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "sparkVersion": prep.spark_version,
            "image": prep.image or defaults.spark_image,
            "imagePullPolicy": defaults.image_pull_policy,
            "mainApplicationFile": SPARK_MAIN_IN_IMAGE,
            "arguments": prep_arguments(spec, paths, TERMINATION_LOG),
            "restartPolicy": {"type": "Never"},
            "sparkConf": _spark_volume_conf(spec),
            "driver": {
                **side,
                "cores": prep.driver_cores,
                "memory": prep.driver_memory,
                "serviceAccount": service_account,
            },
            "executor": {
                **side,
                "cores": prep.executor_cores,
                "memory": prep.executor_memory,
                "instances": prep.executors,
            },
        },
    }
    if defaults.image_pull_secrets:
        app["spec"]["imagePullSecrets"] = list(defaults.image_pull_secrets)
    return app


# --------------------------------------------------------------------------- PyTorchJob


def _escape_expansion(arg: str) -> str:
    """Kubernetes expands `$(VAR)` in command lines; `$$` keeps a user's `$` literal."""
    return arg.replace("$", "$$")


def trainer_command(
    spec: RunSpec, paths: RunPaths, level: int, branch: Branch, ticket: TicketStatus | None = None
) -> list[str]:
    """torchrun for one level (of a transfer run: `ticket`, status.ticket); the training
    operator's environment gives it the topology.

    torchrun reads PET_NNODES, PET_NPROC_PER_NODE and PET_NODE_RANK itself, but takes
    the rendezvous address only from PET_MASTER_ADDR / --master-addr, so the
    MASTER_ADDR / MASTER_PORT that the training operator sets are passed through
    Kubernetes' `$(VAR)` expansion.
    """
    return [
        "torchrun",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        TRAINER_MODULE,
        *(
            _escape_expansion(a)
            for a in trainer_arguments(spec, paths, level, branch, TERMINATION_LOG, ticket)
        ),
    ]


def _trainer_pod(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    level: int,
    branch: Branch,
    ticket: TicketStatus | None,
    defaults: WorkloadDefaults,
) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    resources: dict[str, Any] = {"requests": requests}
    limits = dict(res.extra_resources)  # e.g. RDMA devices for NCCL
    if res.gpus_per_pod > 0:
        limits["nvidia.com/gpu"] = str(res.gpus_per_pod)
    if limits:
        # Extended resources: the request defaults to the limit.
        resources["limits"] = limits
    security = _container_security()
    container = {
        "name": TRAINER_CONTAINER,
        "image": res.image or defaults.trainer_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": trainer_command(spec, paths, level, branch, ticket),
        "ports": [{"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [_storage_mount(spec), {"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the trainer writes its result still says why (the log's tail).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": security,
    }
    if res.env:
        container["env"] = [{"name": name, "value": value} for name, value in sorted(res.env.items())]
    if spec.ticket is not None and spec.ticket.secret_name:  # credentials for an s3:// ticket
        container["envFrom"] = [{"secretRef": {"name": spec.ticket.secret_name}}]
    if res.ipc_lock:  # RDMA registers (pins) memory
        security["capabilities"]["add"] = ["IPC_LOCK"]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            _storage_volume(spec),
            # DataLoader workers pass batches through shared memory; the default 64 MiB is far too small.
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": res.shm_size}},
        ],
        "securityContext": pod_security(spec, defaults),
        # The trainer never talks to the API server.
        "automountServiceAccountToken": False,
    }
    gpus = res.gpus_per_pod > 0
    node_selector = res.node_selector or (defaults.gpu_node_selector if gpus else {})
    tolerations = res.tolerations or (defaults.gpu_tolerations if gpus else [])
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in tolerations]
    if defaults.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in defaults.image_pull_secrets]
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    return {
        "metadata": {"labels": {LABEL_RUN: run.name, LABEL_LEVEL: str(level), LABEL_BRANCH: branch}},
        "spec": pod_spec,
    }


def pytorch_job(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    level: int,
    branch: Branch,
    attempt: int,
    ticket: TicketStatus | None = None,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The PyTorchJob `<run>-level-NN[-reinit|-rprune|-dense]` that trains, evaluates and prunes
    one level; a transfer run's jobs read the ticket the planner resolved (`ticket`, status.ticket).

    With a Kueue queue the job is created suspended: Kueue admits it (unsuspends)
    when the queue has room, instead of racing its webhook.
    """
    res = spec.resources
    template = _trainer_pod(run, spec, paths, level, branch, ticket, defaults or WorkloadDefaults())

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "Never", "template": template}

    replicas = {"Master": replica(1)}
    if res.pods > 1:
        replicas["Worker"] = replica(res.pods - 1)
    run_policy: dict[str, Any] = {"cleanPodPolicy": CLEAN_POD_POLICY}
    labels = {LABEL_LEVEL: str(level), LABEL_BRANCH: branch}
    if res.queue_name:
        labels[LABEL_KUEUE_QUEUE] = res.queue_name
        run_policy["suspend"] = True
    return {
        "apiVersion": PYTORCHJOB_API_VERSION,
        "kind": "PyTorchJob",
        "metadata": _metadata(run, level_job_name(run.name, level, branch), attempt, labels),
        "spec": {
            "nprocPerNode": str(res.processes_per_pod),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


# --------------------------------------------------------------------------- export Job

EXPORT_CONTAINER = "export"
STATUS_ENV = "LTH_STATUS"
"""The run's status, as JSON, in the export Job's environment: the pod never reads the API."""


def export_job(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    attempt: int,
    status: RunStatus,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The Job `<run>-export` that writes runs/<name>/ticket/ with `lth report`, as `lth run`
    does locally, and uploads it to spec.export.url; the trainer image, no GPU, the run's volume.

    backoffLimit 0: a retry is the planner's (spec.retry.export), a new Job at the next attempt.
    """
    defaults = defaults or WorkloadDefaults()
    command = ["lth", "report", paths.run_dir, "--status-env", STATUS_ENV]
    export = spec.export
    if export.url:
        command += ["--upload", export.url]
        if export.endpoint_url:
            command += ["--endpoint-url", export.endpoint_url]
    status_json = json.dumps(status.to_wire(), separators=(",", ":"))
    container: dict[str, Any] = {
        "name": EXPORT_CONTAINER,
        "image": spec.resources.image or defaults.trainer_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": [_escape_expansion(a) for a in command],
        "env": [
            {"name": STATUS_ENV, "value": _escape_expansion(status_json)},
            # matplotlib's cache: the image's home belongs to its own uid, not always the pod's.
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [_storage_mount(spec)],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(),
    }
    if export.secret_name:
        container["envFrom"] = [{"secretRef": {"name": export.secret_name}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [_storage_volume(spec)],
        "securityContext": pod_security(spec, defaults),
        "automountServiceAccountToken": False,
    }
    if defaults.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in defaults.image_pull_secrets]
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": _metadata(run, export_name(run.name), attempt),
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {LABEL_RUN: run.name}}, "spec": pod_spec},
        },
    }


def observe_job(obj: Mapping[str, Any]) -> ObservedChild:
    """A batch/v1 Job as the planner sees it: Complete or Failed True end it (the Job
    controller's terminal conditions, pkg/controller/job/job_controller.go)."""
    failed = _true_condition(obj, "Failed")
    state: ChildState
    message = ""
    if failed is not None:
        state = "Failed"
        message = str(failed.get("message") or failed.get("reason") or "")
    elif _true_condition(obj, "Complete") is not None:
        state = "Succeeded"
    elif int(_mapping(obj.get("status")).get("active") or 0) > 0:
        state = "Running"
    else:
        state = "Pending"
    return ObservedChild(
        name=str(obj["metadata"]["name"]),
        attempt=_attempt(obj),
        state=state,
        message=message,
        deleting=_deleting(obj),
    )


def master_pod_name(job_name: str) -> str:
    """The training operator names replica pods `<job>-<type>-<index>`."""
    return f"{job_name}-master-0"


# --------------------------------------------------------------------------- reading back


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def level_result_from_pod(
    pod: Mapping[str, Any], level: int | None = None, branch: Branch | None = None
) -> LevelResult | None:
    """The result in the master pod's termination message; None when absent, garbled or not this level's."""
    statuses = _mapping(pod.get("status")).get("containerStatuses")
    for status in statuses if isinstance(statuses, list) else []:
        if _mapping(status).get("name") != TRAINER_CONTAINER:
            continue
        message = _mapping(_mapping(status.get("state")).get("terminated")).get("message")
        if not isinstance(message, str):
            return None
        try:
            result = LevelResult.model_validate(json.loads(message))
        except (ValueError, ValidationError):
            return None
        if level is not None and result.level != level:
            return None
        if branch is not None and result.branch != branch:
            return None
        return result
    return None


def with_pod_failure(
    child: ObservedChild, pod: Mapping[str, Any], container: str = TRAINER_CONTAINER
) -> ObservedChild:
    """A failed child with its workload's own words: the termination message of the master's
    trainer or of the Spark driver (the file or field at fault), and whether it said its input
    is bad (not worth a retry)."""
    for status in _list(_mapping(pod.get("status")).get("containerStatuses")):
        if _mapping(status).get("name") != container:
            continue
        terminated = _mapping(_mapping(_mapping(status).get("state")).get("terminated"))
        reason = terminated.get("message")
        message = child.message
        if isinstance(reason, str) and reason.strip() and not reason.lstrip().startswith("{"):
            message = f"{message.rstrip('.')}: {reason.strip()}" if message else reason.strip()
        bad_input = terminated.get("exitCode") == EXIT_BAD_INPUT or (
            isinstance(reason, str) and reason.startswith(BAD_INPUT)
        )
        return replace(child, message=message, retryable=child.retryable and not bad_input)
    return child


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attempt(obj: Mapping[str, Any]) -> int:
    """The planner's attempt number; a child without a readable one counts as attempt 1."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ATTEMPT)
    if not isinstance(raw, str) or not raw.isdigit():
        return 1
    return max(int(raw), 1)


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def observe_spark_application(obj: Mapping[str, Any]) -> ObservedChild:
    """A SparkApplication as the planner sees it."""
    app_state = ((obj.get("status") or {}).get("applicationState")) or {}
    state_name = str(app_state.get("state") or "")
    state: ChildState
    if state_name == "COMPLETED":
        state = "Succeeded"
    elif state_name == "FAILED":
        state = "Failed"
    elif state_name in SPARK_RUNNING_STATES:
        state = "Running"
    else:
        state = "Pending"
    detail = str(app_state.get("errorMessage") or "")
    message = f"{state_name}: {detail}" if detail else ""
    exit_code = SPARK_EXIT_CODE.search(detail)
    return ObservedChild(
        name=str(obj["metadata"]["name"]),
        attempt=_attempt(obj),
        state=state,
        message=message,
        deleting=_deleting(obj),
        retryable=exit_code is None or int(exit_code.group(1)) != EXIT_BAD_INPUT,
    )


def spark_driver_pod_name(obj: Mapping[str, Any]) -> str:
    """The driver pod: status.driverInfo.podName once submitted, else the operator's default name."""
    recorded = _mapping(_mapping(obj.get("status")).get("driverInfo")).get("podName")
    return recorded if isinstance(recorded, str) and recorded else f"{obj['metadata']['name']}-driver"


def _true_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == type_
            and condition.get("status") == "True"
        ):
            return condition
    return None


def observe_pytorch_job(obj: Mapping[str, Any], result: LevelResult | None = None) -> ObservedChild:
    """A PyTorchJob as the planner sees it; `result` comes from `level_result_from_pod` or result.json."""
    state: ChildState
    message = ""
    failed = _true_condition(obj, "Failed")
    if failed is not None:
        state = "Failed"
        message = str(failed.get("message") or failed.get("reason") or "")
    elif _true_condition(obj, "Succeeded") is not None:
        state = "Succeeded"
    elif _true_condition(obj, "Running") is not None or _true_condition(obj, "Restarting") is not None:
        state = "Running"
    else:
        state = "Pending"
        suspended = _true_condition(obj, "Suspended")
        if suspended is not None:
            message = str(suspended.get("message") or "suspended (waiting for the queue)")
    name = str(obj["metadata"]["name"])
    return ObservedChild(
        name=name,
        attempt=_attempt(obj),
        state=state,
        message=message,
        result=result,
        deleting=_deleting(obj),
        stuck=_waiting_for_queue(obj, name) if state == "Pending" else None,
    )


def _waiting_for_queue(obj: Mapping[str, Any], name: str) -> Stuck | None:
    """A suspended job: the training operator deletes its pods and sets Suspended True
    (`PyTorchJob <name> is suspended.`, pkg/controller.v1/common/job.go) until Kueue admits it
    and clears runPolicy.suspend; without Kueue that is never."""
    run_policy = _mapping(_mapping(obj.get("spec")).get("runPolicy"))
    if _true_condition(obj, "Suspended") is None and run_policy.get("suspend") is not True:
        return None
    queue = _mapping(_mapping(obj.get("metadata")).get("labels")).get(LABEL_KUEUE_QUEUE)
    if isinstance(queue, str) and queue:
        detail = f"suspended until Kueue admits it from queue {queue!r} (without Kueue, never)"
    else:
        detail = f"suspended with no Kueue queue (label {LABEL_KUEUE_QUEUE}): nothing will admit it"
    return Stuck("WaitingForQueue", f"PyTorchJob {name}", detail)


# --------------------------------------------------------------------------- stuck pods

IMAGE_WAITING_REASONS: dict[str, StuckReason] = {
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "ErrImageNeverPull": "ErrImageNeverPull",
    "InvalidImageName": "InvalidImageName",
    "ImageInspectError": "ImageInspectError",
}
"""The kubelet's image waiting reasons (pkg/kubelet/images/types.go) and the run's reason for
each. A failed pull shows ErrImagePull, then ImagePullBackOff until the next try, and again:
both are one cause, so the run's condition does not flap with them."""

CONFIG_WAITING_REASON: StuckReason = "CreateContainerConfigError"
"""The kubelet could not build the container's config, e.g. runAsNonRoot against an image that
runs as root (`ErrCreateContainerConfig`, pkg/kubelet/kuberuntime/kuberuntime_container.go)."""


def pod_selector(kind: ChildKind, name: str) -> str:
    """The label selector of a child's pods."""
    return f"{POD_LABEL_OF[kind]}={name}"


def stuck_pods(pods: Iterable[Mapping[str, Any]]) -> Stuck | None:
    """The first reason a child's pods (JSON as the API returns them) cannot run; None when
    nothing holds them. A pod the scheduler cannot place comes first, then image pulls, then
    containers the kubelet cannot configure; init containers before containers, pods by name.
    Finished pods and pods being deleted are passed over."""
    live = sorted(
        (
            pod
            for pod in pods
            if _mapping(pod.get("status")).get("phase", "Pending") in ("Pending", "Running")
            and not _deleting(pod)
        ),
        key=lambda pod: str(_mapping(pod.get("metadata")).get("name", "")),
    )
    for pod in live:
        for condition in _list(_mapping(pod.get("status")).get("conditions")):
            condition = _mapping(condition)
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = str(condition.get("message") or "no node fits the pod")
                return Stuck("Unschedulable", f"pod {_pod_name(pod)}", detail)
    waiting = [(pod, *found) for pod in live for found in _waiting_containers(pod)]
    config: dict[str, StuckReason] = {CONFIG_WAITING_REASON: CONFIG_WAITING_REASON}
    for reasons in (IMAGE_WAITING_REASONS, config):
        for pod, where, reason, message in waiting:
            if reason in reasons:
                detail = message or reason
                if reasons[reason] != reason:
                    detail = f"{reason}: {detail}"  # the kubelet's own reason, where the run's differs
                return Stuck(reasons[reason], f"pod {_pod_name(pod)} {where}", detail)
    return None


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str(_mapping(pod.get("metadata")).get("name", "?"))


def _waiting_containers(pod: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(where, reason, message) of each waiting container, init containers first."""
    status = _mapping(pod.get("status"))
    found = []
    for field, what in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in _list(status.get(field)):
            waiting = _mapping(_mapping(_mapping(container).get("state")).get("waiting"))
            if waiting:
                found.append(
                    (
                        f"{what} {_mapping(container).get('name', '?')}",
                        str(waiting.get("reason") or ""),
                        str(waiting.get("message") or ""),
                    )
                )
    return found
