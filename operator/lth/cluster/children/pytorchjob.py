"""The PyTorchJob `<run>-level-NN[-branch]` that trains one level (training operator v1), and
what is read back from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lth.api import Branch, LevelResult, RunSpec, StabilityResult, TicketStatus
from lth.api.defaults import WorkloadDefaults
from lth.api.naming import level_job_name
from lth.api.observed import ChildState, ObservedChild
from lth.api.workload import (
    TERMINATION_LOG,
    TRAINER_MODULE,
    RunPaths,
    trainer_arguments,
)
from lth.cluster.children.level_api import LevelJobApi
from lth.cluster.children.objects import (
    LABEL_BRANCH,
    LABEL_LEVEL,
    LABEL_RUN,
    TRAINER_CONTAINER,
    RunRef,
    as_mapping,
    attempt_of,
    child_metadata,
    escape_expansion,
    is_deleting,
    pod_security,
    queue_labels,
    tracking_env,
    trainer_mounts,
    trainer_placement,
    trainer_resources,
    trainer_security,
    trainer_volumes,
    true_condition,
    waiting_for_queue,
)

PYTORCHJOB_API_VERSION = "kubeflow.org/v1"
LABEL_JOB_NAME = "training.kubeflow.org/job-name"
LABEL_REPLICA_TYPE = "training.kubeflow.org/replica-type"
LABEL_REPLICA_INDEX = "training.kubeflow.org/replica-index"
"""The labels the training operator puts on every replica pod (`GenLabels`,
pkg/controller.v1/common/job_controller.go; the type lowercased)."""
PYTORCHJOB_PORT = 23456
"""The training operator's default master port (named `pytorchjob-port`), set so no webhook must add it."""

CLEAN_POD_POLICY = "Running"
"""After the job ends, delete pods still running (stragglers holding GPUs after a failure)
but keep finished ones: the master pod's termination message carries the level's result.

No `runPolicy.backoffLimit`: on training-operator 1.8.1 to 1.9.3 a job past its backoff
limit has its pods deleted before it is marked Failed, whatever cleanPodPolicy says
(kubeflow/trainer issue 3419; `ReconcileJobs` in pkg/controller.v1/common/job.go), and
with limit 0 the first failed pod takes that path. Without a limit, a failed replica under
restartPolicy Never fails the job through `UpdateJobStatus`, which keeps the failed pods."""


def trainer_command(arguments: list[str]) -> list[str]:
    """torchrun for one trainer job (`arguments`: a level's, or a job of the instability
    analysis'); the training operator's environment gives it the topology.

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
        *(escape_expansion(a) for a in arguments),
    ]


def _trainer_pod(
    run: RunRef, spec: RunSpec, labels: dict[str, str], arguments: list[str], defaults: WorkloadDefaults
) -> dict[str, Any]:
    res = spec.resources
    security = trainer_security(spec)
    container = {
        "name": TRAINER_CONTAINER,
        "image": res.image or defaults.trainer_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": trainer_command(arguments),
        "ports": [{"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT, "protocol": "TCP"}],
        "resources": trainer_resources(spec),
        "volumeMounts": trainer_mounts(spec),
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the trainer writes its result still says why (the log's tail).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": security,
    }
    # a Secret's key by reference: the kubelet reads it, the spec never holds it
    env = [
        {"name": name, "value": value} if isinstance(value, str) else {"name": name, **value.to_wire()}
        for name, value in sorted(res.env.items())
    ] + tracking_env(spec)
    if env:
        container["env"] = env
    if spec.ticket is not None and spec.ticket.secret_name:  # credentials for an s3:// ticket
        container["envFrom"] = [{"secretRef": {"name": spec.ticket.secret_name}}]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": trainer_volumes(spec),
        "securityContext": pod_security(spec, defaults),
        # The trainer never talks to the API server.
        "automountServiceAccountToken": False,
        **trainer_placement(spec, defaults),
    }
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    return {"metadata": {"labels": {LABEL_RUN: run.name, **labels}}, "spec": pod_spec}


def training_job(
    run: RunRef,
    spec: RunSpec,
    name: str,
    labels: dict[str, str],
    arguments: list[str],
    attempt: int,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The PyTorchJob `name` that runs the trainer with `arguments` on the run's resources:
    `labels` say which job of the run it is (on the job and its pods): a level's, or one of
    the instability analysis' (`lth.cluster.children.level_jobs`).

    With a Kueue queue the job is created suspended: Kueue admits it (unsuspends)
    when the queue has room, instead of racing its webhook.
    """
    res = spec.resources
    template = _trainer_pod(run, spec, labels, arguments, defaults or WorkloadDefaults())

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "Never", "template": template}

    replicas = {"Master": replica(1)}
    if res.pods > 1:
        replicas["Worker"] = replica(res.pods - 1)
    run_policy: dict[str, Any] = {"cleanPodPolicy": CLEAN_POD_POLICY}
    if res.queue_name:
        run_policy["suspend"] = True
    return {
        "apiVersion": PYTORCHJOB_API_VERSION,
        "kind": "PyTorchJob",
        "metadata": child_metadata(run, name, attempt, {**labels, **queue_labels(spec)}),
        "spec": {
            "nprocPerNode": str(res.processes_per_pod),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
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
    rewind_to: str | None = None,
) -> dict[str, Any]:
    """The PyTorchJob `<run>-level-NN[-reinit|-rprune|-dense]` that trains, evaluates and prunes
    one level; a transfer run's jobs read the ticket the planner resolved (`ticket`, status.ticket),
    a rewindTo auto run's pruned levels the point its analysis chose (`rewind_to`)."""
    arguments = trainer_arguments(spec, paths, level, branch, TERMINATION_LOG, ticket, rewind_to)
    name, labels = level_job_name(run.name, level, branch), {LABEL_LEVEL: str(level), LABEL_BRANCH: branch}
    return training_job(run, spec, name, labels, arguments, attempt, defaults)


def master_pod_name(job_name: str) -> str:
    """The training operator names replica pods `<job>-<type>-<index>`."""
    return f"{job_name}-master-0"


def lead_pod_selector(job_name: str) -> str:
    """The master pod, whose termination message carries the level's result."""
    return f"{LABEL_JOB_NAME}={job_name},{LABEL_REPLICA_TYPE}=master,{LABEL_REPLICA_INDEX}=0"


def pods_of(obj: Mapping[str, Any]) -> int:
    replicas = as_mapping(as_mapping(obj.get("spec")).get("pytorchReplicaSpecs"))
    return sum(int(as_mapping(r).get("replicas", 1)) for r in replicas.values())


def pod_controller(obj: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """The training operator creates the pods itself: its FailedCreatePod events are the job's."""
    meta = as_mapping(obj.get("metadata"))
    return "PyTorchJob", str(meta.get("name", "")), str(meta.get("uid", ""))


def observe_pytorch_job(
    obj: Mapping[str, Any], result: LevelResult | StabilityResult | None = None
) -> ObservedChild:
    """A PyTorchJob as the planner sees it; `result` comes from the master pod or result.json."""
    state: ChildState
    message = ""
    failed = true_condition(obj, "Failed")
    if failed is not None:
        state = "Failed"
        message = str(failed.get("message") or failed.get("reason") or "")
    elif true_condition(obj, "Succeeded") is not None:
        state = "Succeeded"
    elif true_condition(obj, "Running") is not None or true_condition(obj, "Restarting") is not None:
        state = "Running"
    else:
        state = "Pending"
        suspended = true_condition(obj, "Suspended")
        if suspended is not None:
            message = str(suspended.get("message") or "suspended (waiting for the queue)")
    name = str(obj["metadata"]["name"])
    # A suspended job: the training operator deletes its pods and sets Suspended True
    # (`PyTorchJob <name> is suspended.`, pkg/controller.v1/common/job.go) until Kueue admits
    # it and clears runPolicy.suspend.
    run_policy = as_mapping(as_mapping(obj.get("spec")).get("runPolicy"))
    suspended_now = true_condition(obj, "Suspended") is not None or run_policy.get("suspend") is True
    return ObservedChild(
        name=name,
        attempt=attempt_of(obj),
        state=state,
        message=message,
        result=result,
        deleting=is_deleting(obj),
        stuck=waiting_for_queue("PyTorchJob", name, obj) if state == "Pending" and suspended_now else None,
    )


API = LevelJobApi(
    kind="PyTorchJob",
    served_by="the Kubeflow training operator v1 (kubeflow/trainer release-1.9)",
    container=TRAINER_CONTAINER,
    build=pytorch_job,
    build_job=training_job,
    observe=observe_pytorch_job,
    lead_pod_name=master_pod_name,
    lead_pod_selector=lead_pod_selector,
    pods_of=pods_of,
    pod_controller=pod_controller,
)
