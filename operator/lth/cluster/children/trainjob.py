"""The TrainJob `<run>-level-NN[-branch]` that trains one level on Kubeflow Trainer v2 (v2.3),
and what is read back from it.

Trainer turns a TrainJob into a JobSet of the same name built from its ClusterTrainingRuntime:
the runtime's replicatedJob `node` becomes one Indexed Job `<job>-node-0` whose `numNodes`
pods (`<job>-node-0-<index>-<5 random>`) run the runtime's container `node` with the TrainJob's
image, command and env, the resources of `resourcesPerNode`, and the PET_* environment its
torch plugin injects (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK from the pod's completion
index, PET_MASTER_ADDR `<job>-node-0-0.<job>`, PET_MASTER_PORT 29500; kubeflow/trainer v2.3.0
pkg/runtime/framework/plugins/torch/torch.go). It starts no torchrun and sets no RANK,
WORLD_SIZE or MASTER_ADDR: the command starts torchrun, which reads PET_<ARG> for each of its
arguments. What a TrainJob cannot say itself (the pods' securityContext, volumes, placement and
labels) goes in a runtime patch of our own manager (`spec.runtimePatches`, v2.2+); what a patch
cannot say (restartPolicy, backoffLimit, the termination message) is the chart's
ClusterTrainingRuntime's, which keeps a failed pod and its message and leaves retries to the
planner. The operator never updates a TrainJob after its create: Kueue's own runtime patch
(manager `kueue.x-k8s.io/manager`) stays as Kueue wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lth.api import Branch, LevelResult, RunSpec, StabilityResult, TicketStatus
from lth.api.defaults import WorkloadDefaults
from lth.api.naming import TRAINJOB_REPLICATED_JOB, level_job_name
from lth.api.observed import ChildState, ObservedChild, Stuck
from lth.api.workload import TERMINATION_LOG, TRAINER_MODULE, RunPaths, trainer_arguments
from lth.cluster.children.level_api import LevelJobApi
from lth.cluster.children.objects import (
    LABEL_BRANCH,
    LABEL_LEVEL,
    LABEL_RUN,
    RunRef,
    as_list,
    as_mapping,
    attempt_of,
    child_metadata,
    escape_expansion,
    event_time,
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

TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
NODE = TRAINJOB_REPLICATED_JOB
"""The runtime's replicatedJob and container: Trainer applies the image, command and env only
to the container named `node` of the job labelled trainjob-ancestor-step: trainer."""
RUNTIME_PATCH_MANAGER = "lth.dev/operator"
LABEL_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""On every pod of an Indexed Job (label and annotation; kube-controller-manager's Job controller)."""
TICKET_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)
"""The keys of spec.ticket.secretName the trainer reads (lth.storage.objectstore): a TrainJob
has no envFrom, so each is named (optional: a Secret need not hold them all)."""
RESOURCES_CREATION_FAILED = "TrainJobResourcesCreationFailed"
"""The Warning event, and the only trace, of a TrainJob Trainer could not reconcile (a runtime
that does not exist, a JobSet the API server refused): `TrainJob resources reconciliation
failed: <error>` (pkg/controller/trainjob_controller.go, v2.3.0; kubeflow/trainer #3671)."""
RUNTIME_NOT_FOUND = (
    "not found ClusterTrainingRuntime specified in TrainJob",
    "must be created before the TrainJob is created",
)
"""The controller's error for a missing runtime (pkg/runtime/core/clustertrainingruntime.go),
and its webhook's refusal of a TrainJob naming one."""


def trainer_command(arguments: list[str]) -> list[str]:
    """torchrun for one trainer job (a level's, or one of the instability analysis'): the
    topology and the rendezvous come from Trainer's PET_*."""
    return ["torchrun", "-m", TRAINER_MODULE, *(escape_expansion(a) for a in arguments)]


def _env(spec: RunSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [  # a Secret's key by reference: the kubelet reads it
        {"name": name, "value": value} if isinstance(value, str) else {"name": name, **value.to_wire()}
        for name, value in sorted(spec.resources.env.items())
    ]
    if spec.ticket is not None and spec.ticket.secret_name:  # credentials for an s3:// ticket
        secret = spec.ticket.secret_name
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in TICKET_CREDENTIALS
        ]
    return env + tracking_env(spec)


def _runtime_patch(
    run: RunRef, spec: RunSpec, labels: dict[str, str], defaults: WorkloadDefaults
) -> dict[str, Any]:
    """Our patch of the runtime's `node` job: what every trainer pod needs from this run."""
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(spec, defaults),
        "volumes": trainer_volumes(spec),
        "containers": [
            {"name": NODE, "volumeMounts": trainer_mounts(spec), "securityContext": trainer_security(spec)}
        ],
        **trainer_placement(spec, defaults),
    }
    node = {
        "name": NODE,
        "template": {
            "spec": {"template": {"metadata": {"labels": {LABEL_RUN: run.name, **labels}}, "spec": pod_spec}}
        },
    }
    return {
        "manager": RUNTIME_PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node]}}},
    }


def train_job(
    run: RunRef,
    spec: RunSpec,
    name: str,
    labels: dict[str, str],
    arguments: list[str],
    attempt: int,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The TrainJob `name` that runs the trainer with `arguments` on the run's resources:
    `labels` say which job of the run it is (on the job and, through our runtime patch, its pods):
    a level's, or one of the instability analysis' (`lth.cluster.children.level_jobs`).

    With a Kueue queue it is created suspended (Kueue's webhook would suspend it too), and Kueue
    resumes it when the queue has room."""
    defaults = defaults or WorkloadDefaults()
    res = spec.resources
    trainer: dict[str, Any] = {
        "image": res.image or defaults.trainer_image,
        "command": trainer_command(arguments),
        "numNodes": res.pods,
        "numProcPerNode": res.processes_per_pod,
        "resourcesPerNode": trainer_resources(spec),
    }
    env = _env(spec)
    if env:
        trainer["env"] = env
    body: dict[str, Any] = {
        "runtimeRef": {"name": defaults.training_runtime},
        "trainer": trainer,
        "runtimePatches": [_runtime_patch(run, spec, labels, defaults)],
    }
    if res.queue_name:
        body["suspend"] = True
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": "TrainJob",
        "metadata": child_metadata(run, name, attempt, {**labels, **queue_labels(spec)}),
        "spec": body,
    }


def trainjob(
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
    """The TrainJob `<run>-level-NN[-reinit|-rprune|-dense]` that trains, evaluates and prunes one
    level; a transfer run's jobs read the ticket the planner resolved (`ticket`, status.ticket),
    a rewindTo auto run's pruned levels the point its analysis chose (`rewind_to`)."""
    arguments = trainer_arguments(spec, paths, level, branch, TERMINATION_LOG, ticket, rewind_to)
    name, labels = level_job_name(run.name, level, branch), {LABEL_LEVEL: str(level), LABEL_BRANCH: branch}
    return train_job(run, spec, name, labels, arguments, attempt, defaults)


def lead_pod_selector(job_name: str) -> str:
    """The pod of node 0 (its completion index), whose termination message carries the result."""
    return f"{LABEL_JOBSET_NAME}={job_name},{LABEL_COMPLETION_INDEX}=0"


def pods_of(obj: Mapping[str, Any]) -> int:
    return int(as_mapping(as_mapping(obj.get("spec")).get("trainer")).get("numNodes") or 1)


def pod_controller(obj: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """The Job controller creates the pods, of the JobSet's one Job `<job>-node-0` (JobSet's
    `GenJobName`); its uid is not the TrainJob's to know."""
    return "Job", f"{obj['metadata']['name']}-{NODE}-0", None


def observe_trainjob(
    obj: Mapping[str, Any], result: LevelResult | StabilityResult | None = None
) -> ObservedChild:
    """A TrainJob as the planner sees it. Trainer writes only Suspended, Complete and Failed,
    Complete and Failed being the JobSet's own conditions renamed (AllJobsCompleted, FailedJobs);
    `jobsStatus` counts Jobs, not pods: a job with an active Job is Running."""
    state: ChildState
    message = ""
    failed = true_condition(obj, "Failed")
    suspended = as_mapping(obj.get("spec")).get("suspend") is True
    if failed is not None:
        state = "Failed"
        message = str(failed.get("message") or failed.get("reason") or "")
    elif true_condition(obj, "Complete") is not None:
        state = "Succeeded"
    elif not suspended and any(
        int(as_mapping(job).get("active") or 0) > 0
        for job in as_list(as_mapping(obj.get("status")).get("jobsStatus"))
    ):
        state = "Running"
    else:
        state = "Pending"
    name = str(obj["metadata"]["name"])
    return ObservedChild(
        name=name,
        attempt=attempt_of(obj),
        state=state,
        message=message,
        result=result,
        deleting=is_deleting(obj),
        stuck=waiting_for_queue("TrainJob", name, obj) if state == "Pending" and suspended else None,
    )


def resources_not_created(obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> Stuck | None:
    """Why Trainer made no JobSet for this TrainJob: its latest reconcile error, from the
    events about it; None when there is none."""
    uid = as_mapping(obj.get("metadata")).get("uid")
    latest: Mapping[str, Any] | None = None
    for event in events:
        involved = as_mapping(event.get("involvedObject"))
        if event.get("reason") != RESOURCES_CREATION_FAILED or involved.get("uid") != uid:
            continue
        if latest is None or event_time(event) >= event_time(latest):
            latest = event
    if latest is None:
        return None
    name = obj["metadata"]["name"]
    detail = str(latest.get("message") or latest.get("note") or "")
    if any(text in detail for text in RUNTIME_NOT_FOUND):
        runtime = as_mapping(as_mapping(obj.get("spec")).get("runtimeRef")).get("name", "?")
        return Stuck("RuntimeMissing", f"TrainJob {name}", runtime_missing(str(runtime), detail))
    return Stuck("ResourcesNotCreated", f"TrainJob {name}", detail)


def runtime_missing(runtime: str, detail: str) -> str:
    return (
        f"{detail}; install the ClusterTrainingRuntime {runtime!r} (the chart's, with "
        "trainingRuntime.create=true) or set workloads.trainingRuntime to one that exists; retried "
        "at the next resync"
    )


API = LevelJobApi(
    kind="TrainJob",
    served_by="Kubeflow Trainer v2 (kubeflow/trainer v2.3, with JobSet)",
    container=NODE,
    build=trainjob,
    build_job=train_job,
    observe=observe_trainjob,
    lead_pod_name=None,
    lead_pod_selector=lead_pod_selector,
    pods_of=pods_of,
    pod_controller=pod_controller,
    stuck_from_events=resources_not_created,
)
