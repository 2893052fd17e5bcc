"""A stand-in for the Kubeflow training operator's PyTorchJob controller, release-1.9.

Written from kubeflow/training-operator, branch release-1.9 (what v1.9.0 to v1.9.3
ship); paths below are under pkg/. Each reconcile of a job does what `ReconcileJobs`
(controller.v1/common/job.go) does, in its order:

- a finished job (Succeeded or Failed condition) only has cleanPodPolicy applied
  (`DeletePodsAndServices`: None keeps all, Running deletes Running and Pending pods
  with their Services, All deletes everything);
- a suspended job has its pods and Services deleted whatever cleanPodPolicy says,
  and conditions Suspended / Running=False (`PyTorchJob <name> is suspended.`);
  resuming sets Suspended=False, reason PyTorchJobResumed, and a new startTime;
- `runPolicy.backoffLimit`, when set: a new failed pod while not all replicas are
  active, with `NumRequeues + 1 > backoffLimit` (NumRequeues is always 0 here, as
  in upstream's fake work queue), fails the job; so does the restart count of running
  pods reaching the limit (`PastBackoffLimit`, core/job.go). On this path release-1.9
  deletes every pod and Service **before** it sets Failed (`Job <name> has failed
  because it has reached the specified backoff limit`), so cleanPodPolicy is bypassed:
  kubeflow/trainer issue 3419, fixed in v1.9.4 by PR 3420 (`fixed_3419=True` models it);
- otherwise pods and Services are created per replica (`ReconcilePods`,
  `ReconcileServices`, common/pod.go and common/service.go) and the status comes from
  pod phases (`UpdateJobStatus`, controller.v1/pytorch/pytorchjob_controller.go): the
  Master alone decides Succeeded; under restartPolicy Never a failed replica of any
  type fails the job (`PyTorchJob <name> is failed because <n> <Type> replica(s) failed.`);
  under OnFailure/Always a Failed pod is deleted to be recreated (Restarting).

Pods are `<job>-<type>-<index>` (`GenGeneralName`), with the operator's labels
(`GenLabels`), the environment of `setPodEnv` (controller.v1/pytorch/envvar.go) on every
container, and, in Worker pods of a job with a Master, the init container
`init-pytorch` (controller.v1/pytorch/initcontainer.go; image `alpine:3.10`, the
default of `--pytorch-init-container-image` in config/config.go, no securityContext).
A pod the API server refuses (Pod Security, a quota, a webhook) is a Warning event
`FailedCreatePod` on the job, `Error creating: <the server's error>`, posted to the API
(`RealPodControl.createPods`, controller.v1/control/pod_control.go), and the reconcile
ends there with that error (`ReconcilePods`, common/pod.go): the master may run, the
refused worker never comes, and the job keeps waiting.
Conditions are set as `setCondition` (util/status.go) does: nothing changes after
Failed, an equal status and reason is no change, Running and Restarting exclude each
other, and Succeeded or Failed turns Running to False.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from tests.standins.events import Recorder

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER = "pytorch"
PORT_NAME = "pytorchjob-port"
DEFAULT_PORT = 23456
INIT_IMAGE = "alpine:3.10"
INIT_MAX_TRIES = 100
LABEL_OPERATOR = "training.kubeflow.org/operator-name"
LABEL_JOB = "training.kubeflow.org/job-name"
LABEL_TYPE = "training.kubeflow.org/replica-type"
LABEL_INDEX = "training.kubeflow.org/replica-index"
LABEL_ROLE = "training.kubeflow.org/job-role"
OPERATOR_NAME = "pytorchjob-controller"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_name(job: str, replica_type: str, index: int) -> str:
    """`GenGeneralName`: `<job>-<lower(type)>-<index>`, `/` replaced by `-`."""
    return f"{job}-{replica_type.lower()}-{index}".replace("/", "-")


def init_container(master_addr: str) -> dict[str, Any]:
    """The default template of initcontainer.go, rendered for one job."""
    loop = (
        f"err=1;for i in $(seq {INIT_MAX_TRIES}); do if nslookup {master_addr}; then err=0 && break; fi;"
        "echo waiting for master; sleep 2; done; exit $err"
    )
    return {
        "name": "init-pytorch",
        "image": INIT_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "resources": {
            "limits": {"cpu": "100m", "memory": "20Mi"},
            "requests": {"cpu": "50m", "memory": "10Mi"},
        },
        "command": ["sh", "-c", loop],
    }


def _replicas(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The replica specs after defaulting (pytorch_defaults.go): replicas 1, restartPolicy OnFailure,
    the port `pytorchjob-port` on the container `pytorch` (or the first container)."""
    specs = copy.deepcopy(job["spec"]["pytorchReplicaSpecs"])
    for spec in specs.values():
        spec.setdefault("replicas", 1)
        spec.setdefault("restartPolicy", "OnFailure")
        containers = spec["template"]["spec"]["containers"]
        container = next((c for c in containers if c["name"] == CONTAINER), containers[0])
        ports = container.setdefault("ports", [])
        if not any(p.get("name") == PORT_NAME for p in ports):
            ports.append({"name": PORT_NAME, "containerPort": DEFAULT_PORT})
    return specs


def _master_port(replicas: dict[str, dict[str, Any]]) -> int:
    """`getPortFromPyTorchJob`: the Master's `pytorch` container's port named pytorchjob-port."""
    for container in replicas["Master"]["template"]["spec"]["containers"]:
        if container["name"] == CONTAINER:
            for port in container.get("ports", []):
                if port.get("name") == PORT_NAME:
                    return int(port["containerPort"])
    raise ValueError("port not found")


def pod_environment(job: dict[str, Any], replica_type: str, index: int) -> list[dict[str, str]]:
    """`setPodEnv`: what is appended to every container's env, in upstream's order."""
    name = job["metadata"]["name"]
    replicas = _replicas(job)
    nproc = job["spec"].get("nprocPerNode")
    nproc_int = int(nproc) if isinstance(nproc, str) and nproc.isdigit() else 1
    total = sum(int(spec["replicas"]) for spec in replicas.values())
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if "Master" in replicas:
        port = str(_master_port(replicas))
        addr = pod_name(name, "Master", 0)
        rank = index + 1 if replica_type == "Worker" else index
        env += [
            {"name": "MASTER_PORT", "value": port},
            {"name": "PET_MASTER_PORT", "value": port},
            {"name": "MASTER_ADDR", "value": addr},
            {"name": "PET_MASTER_ADDR", "value": addr},
            {"name": "WORLD_SIZE", "value": str(total * nproc_int)},
            {"name": "RANK", "value": str(rank)},
            {"name": "PET_NODE_RANK", "value": str(rank)},
        ]
    if nproc is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": str(nproc)})
    env.append({"name": "PET_NNODES", "value": str(total)})
    return env


def _labels(job: str, replica_type: str | None = None, index: int | None = None) -> dict[str, str]:
    labels = {LABEL_OPERATOR: OPERATOR_NAME, LABEL_JOB: job}
    if replica_type is not None:
        labels[LABEL_TYPE] = replica_type.lower()
    if index is not None:
        labels[LABEL_INDEX] = str(index)
    return labels


def _owner(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def new_pod(job: dict[str, Any], replica_type: str, index: int) -> dict[str, Any]:
    """`createNewPod` (common/pod.go) with the PyTorch hooks: labels, env, init container, restartPolicy."""
    replicas = _replicas(job)
    spec = replicas[replica_type]
    template = copy.deepcopy(spec["template"])
    name = job["metadata"]["name"]
    labels = {**(template.get("metadata") or {}).get("labels", {}), **_labels(name, replica_type, index)}
    if replica_type == "Master":
        labels[LABEL_ROLE] = "master"
    pod_spec = template["spec"]
    for container in pod_spec["containers"]:
        container["env"] = [*container.get("env", []), *pod_environment(job, replica_type, index)]
    if replica_type == "Worker" and "Master" in replicas:
        pod_spec["initContainers"] = [
            *pod_spec.get("initContainers", []),
            init_container(pod_name(name, "Master", 0)),
        ]
    policy = spec["restartPolicy"]
    pod_spec["restartPolicy"] = "Never" if policy == "ExitCode" else policy
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, replica_type, index),
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "annotations": (template.get("metadata") or {}).get("annotations", {}),
            "ownerReferences": [_owner(job)],
        },
        "spec": pod_spec,
    }


def new_service(job: dict[str, Any], replica_type: str, index: int) -> dict[str, Any]:
    """`CreateNewService` (common/service.go): headless, the ports of the `pytorch` container."""
    replicas = _replicas(job)
    name = job["metadata"]["name"]
    labels = _labels(name, replica_type, index)
    container = next(
        c for c in replicas[replica_type]["template"]["spec"]["containers"] if c["name"] == CONTAINER
    )
    ports = [{"name": p["name"], "port": p["containerPort"]} for p in container.get("ports", [])]
    spec: dict[str, Any] = {"clusterIP": "None", "selector": labels}
    if ports:
        spec["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pod_name(name, replica_type, index),
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [_owner(job)],
        },
        "spec": spec,
    }


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def _is_true(status: dict[str, Any], type_: str) -> bool:
    condition = _condition(status, type_)
    return condition is not None and condition["status"] == "True"


def set_condition(status: dict[str, Any], type_: str, value: str, reason: str, message: str) -> None:
    """`UpdateJobConditions` / `setCondition` / `filterOutCondition` (util/status.go)."""
    if _is_true(status, "Failed"):
        return
    current = _condition(status, type_)
    if current is not None and current["status"] == value and current["reason"] == reason:
        return
    stamp = now()
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastUpdateTime": stamp,
        "lastTransitionTime": current["lastTransitionTime"]
        if current is not None and current["status"] == value
        else stamp,
    }
    kept = []
    for condition in status.get("conditions") or []:
        if {type_, condition["type"]} == {"Running", "Restarting"} or condition["type"] == type_:
            continue
        if type_ in ("Failed", "Succeeded") and condition["type"] == "Running":
            condition = {**condition, "status": "False"}
        kept.append(condition)
    status["conditions"] = [*kept, new]


def _is_finished(status: dict[str, Any]) -> bool:
    return _is_true(status, "Succeeded") or _is_true(status, "Failed")


@dataclass
class TrainingOperator:
    """Reconciles every PyTorchJob once per `step`, through the API server like the real controller."""

    api_client: Any
    fixed_3419: bool = False
    """True: v1.9.4 and later, where the backoff path sets Failed before it deletes pods."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(job, reason, message) of every event the real controller would record"""

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.recorder = Recorder(self.api_client, OPERATOR_NAME)

    def step(self) -> None:
        for job in self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
            if not job["metadata"].get("deletionTimestamp"):
                self.reconcile(job)

    def _owned(self, kind: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        selector = f"{LABEL_JOB}={name}"
        if kind == "pods":
            items = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        else:
            items = self.core.list_namespaced_service(
                namespace, label_selector=selector, _preload_content=False
            )
        uid = job["metadata"]["uid"]
        return [
            obj
            for obj in json.loads(items.data)["items"]
            if any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])
        ]

    def _event(self, job: dict[str, Any], reason: str, message: str) -> None:
        self.events.append((job["metadata"]["name"], reason, message))

    def reconcile(self, job: dict[str, Any]) -> None:
        status = copy.deepcopy(job.get("status") or {})
        old = copy.deepcopy(status)
        name = job["metadata"]["name"]
        if not status.get("conditions"):
            # The create-event predicate (`onOwnerCreateFunc`) marks a new job Created.
            set_condition(status, "Created", "True", "PyTorchJobCreated", f"PyTorchJob {name} is created.")
        pods = self._owned("pods", job)
        run_policy = job["spec"].get("runPolicy") or {}
        clean = run_policy.get("cleanPodPolicy", "None")
        if _is_finished(status):
            self._delete_pods(job, pods, clean, finished=True)
            if _is_true(status, "Succeeded"):
                for replica in (status.get("replicaStatuses") or {}).values():
                    replica["succeeded"] = replica.get("succeeded", 0) + replica.get("active", 0)
                    replica["active"] = 0
            self._write(job, old, status)
            return
        if run_policy.get("suspend"):
            self._delete_pods(job, pods, clean, finished=False)
            for replica in (status.get("replicaStatuses") or {}).values():
                replica["active"] = 0
            message = f"PyTorchJob {name} is suspended."
            if _is_true(status, "Running"):
                set_condition(status, "Running", "False", "PyTorchJobSuspended", message)
            if not _is_true(status, "Suspended"):
                set_condition(status, "Suspended", "True", "PyTorchJobSuspended", message)
            self._write(job, old, status)
            return
        if _is_true(status, "Suspended"):
            set_condition(status, "Suspended", "False", "PyTorchJobResumed", f"PyTorchJob {name} is resumed.")
            status["startTime"] = now()

        replicas = _replicas(job)
        active = [p for p in pods if p["status"].get("phase") == "Running" and not _deleting(p)]
        failed = sum(1 for p in pods if p["status"].get("phase") == "Failed")
        total = sum(int(spec["replicas"]) for spec in replicas.values())
        previous_failed = sum(r.get("failed", 0) for r in (status.get("replicaStatuses") or {}).values())
        limit = run_policy.get("backoffLimit")
        exceeds = False
        if limit is not None:
            new_failure = failed > previous_failed
            requeues = 0  # `NumRequeues` of upstream's fake work queue (common/util/fake_workqueue.go)
            exceeds = (
                new_failure and len(active) != total and requeues + 1 > int(limit)
            ) or self._past_backoff(replicas, pods, int(limit))
        if exceeds:
            message = f"Job {name} has failed because it has reached the specified backoff limit"
            status.setdefault("completionTime", now())
            if self.fixed_3419:
                self._event(job, "PyTorchJobFailed", message)
                set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
                self._delete_pods(job, pods, clean, finished=True)
            else:
                # v1.9.3 and before: not finished yet, so cleanPodPolicy is ignored.
                self._delete_pods(job, pods, clean, finished=False)
                self._event(job, "PyTorchJobFailed", message)
                set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
            self._write(job, old, status)
            return

        status["replicaStatuses"] = {}
        services = {s["metadata"]["name"] for s in self._owned("services", job)}
        for replica_type, spec in replicas.items():
            counts = {"active": 0, "succeeded": 0, "failed": 0}
            for index in range(int(spec["replicas"])):
                wanted = pod_name(name, replica_type, index)
                pod = next((p for p in pods if p["metadata"]["name"] == wanted), None)
                if pod is None:
                    if not self._create(job, "pods", new_pod(job, replica_type, index)):
                        self._write(job, old, status)
                        return  # ReconcilePods returns the error: no status update this time
                else:
                    self._count(job, status, replica_type, spec, pod, counts)
                if wanted not in services:
                    self._create(job, "services", new_service(job, replica_type, index))
            status["replicaStatuses"][replica_type] = counts
        self._update_job_status(job, status, replicas)
        self._write(job, old, status)

    @staticmethod
    def _past_backoff(replicas: dict[str, dict[str, Any]], pods: list[dict[str, Any]], limit: int) -> bool:
        """`PastBackoffLimit` (core/job.go): restarts of running pods of restarting replica types."""
        restarts = 0
        for replica_type, spec in replicas.items():
            if spec["restartPolicy"] not in ("OnFailure", "Always", "ExitCode"):
                continue
            for pod in pods:
                if pod["metadata"]["labels"].get(LABEL_TYPE) != replica_type.lower():
                    continue
                if pod["status"].get("phase") != "Running":
                    continue
                for key in ("initContainerStatuses", "containerStatuses"):
                    restarts += sum(int(s.get("restartCount", 0)) for s in pod["status"].get(key) or [])
        return (limit == 0 and restarts > 0) or (limit > 0 and restarts >= limit)

    def _count(
        self,
        job: dict[str, Any],
        status: dict[str, Any],
        replica_type: str,
        spec: dict[str, Any],
        pod: dict[str, Any],
        counts: dict[str, int],
    ) -> None:
        """The per-pod part of `ReconcilePods`, then `updateJobReplicaStatuses` (core/status.go)."""
        phase = pod["status"].get("phase")
        exit_code = 0xBEEF
        for container in pod["status"].get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if container["name"] == CONTAINER and terminated:
                exit_code = int(terminated["exitCode"])
                meta = pod["metadata"]
                self._event(
                    job,
                    "ExitedWithCode",
                    f"Pod: {meta['namespace']}.{meta['name']} exited with code {exit_code}",
                )
        policy = spec["restartPolicy"]
        if phase == "Failed":
            retryable = exit_code >= 128
            if policy in ("OnFailure", "Always") or (policy == "ExitCode" and retryable):
                self._delete(pod["metadata"]["namespace"], "pods", pod["metadata"]["name"])
                message = (
                    f"job {job['metadata']['name']} is restarting because {replica_type} replica(s) failed."
                )
                self._event(job, "PyTorchJobRestarting", message)
                set_condition(status, "Restarting", "True", "PyTorchJobRestarting", message)
            elif policy == "ExitCode":
                message = (
                    f'job "{job["metadata"]["name"]}" is failing because "{replica_type}" replica(s) failed.'
                )
                self._event(job, "PyTorchJobFailed", message)
                set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
        if phase == "Running":
            counts["failed" if _deleting(pod) else "active"] += 1
        elif phase == "Succeeded":
            counts["succeeded"] += 1
        elif phase == "Failed":
            counts["failed"] += 1

    def _update_job_status(
        self, job: dict[str, Any], status: dict[str, Any], replicas: dict[str, dict[str, Any]]
    ) -> None:
        """`UpdateJobStatus` of the PyTorchJob controller (a job with a Master)."""
        name = job["metadata"]["name"]
        status.setdefault("startTime", now())
        for replica_type, spec in replicas.items():
            counts = status["replicaStatuses"][replica_type]
            expected = int(spec["replicas"]) - counts["succeeded"]
            if "Master" in replicas and replica_type == "Master":
                if counts["active"] > 0:
                    set_condition(
                        status, "Running", "True", "PyTorchJobRunning", f"PyTorchJob {name} is running."
                    )
                if expected == 0:
                    message = f"PyTorchJob {name} is successfully completed."
                    self._event(job, "PyTorchJobSucceeded", message)
                    status.setdefault("completionTime", now())
                    set_condition(status, "Succeeded", "True", "PyTorchJobSucceeded", message)
                    return
            if counts["failed"] > 0 and int(spec["replicas"]) > counts["succeeded"] + counts["active"]:
                if spec["restartPolicy"] != "Never":
                    message = (
                        f"PyTorchJob {name} is restarting because {counts['failed']} {replica_type} "
                        "replica(s) failed."
                    )
                    set_condition(status, "Restarting", "True", "PyTorchJobRestarting", message)
                else:
                    failed = counts["failed"]
                    message = (
                        f"PyTorchJob {name} is failed because {failed} {replica_type} replica(s) failed."
                    )
                    self._event(job, "PyTorchJobFailed", message)
                    status.setdefault("completionTime", now())
                    set_condition(status, "Failed", "True", "PyTorchJobFailed", message)

    def _delete_pods(
        self, job: dict[str, Any], pods: list[dict[str, Any]], clean: str, finished: bool
    ) -> None:
        """`DeletePodsAndServices`: cleanPodPolicy only once the job is finished."""
        if finished and clean == "None":
            return
        for pod in pods:
            phase = pod["status"].get("phase")
            if finished and clean == "Running" and phase not in ("Running", "Pending"):
                continue
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            self._delete(namespace, "pods", name)
            self._delete(namespace, "services", name)

    def _create(self, job: dict[str, Any], kind: str, obj: dict[str, Any]) -> bool:
        """Create a pod or Service; False when the server refused the pod (FailedCreatePod)."""
        namespace = job["metadata"]["namespace"]
        try:
            if kind == "pods":
                self.core.create_namespaced_pod(namespace, obj, _preload_content=False)
            else:
                self.core.create_namespaced_service(namespace, obj, _preload_content=False)
        except client.ApiException as error:
            if error.status == 409:
                return True
            if kind != "pods" or error.status not in (400, 403, 404, 422):
                raise
            message = json.loads(error.body or "{}").get("message") or str(error.reason)
            self._event(job, "FailedCreatePod", f"Error creating: {message}")
            self.recorder.event(
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PyTorchJob", **job},
                "Warning",
                "FailedCreatePod",
                f"Error creating: {message}",
            )
            return False
        return True

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        try:
            if kind == "pods":
                self.core.delete_namespaced_pod(name, namespace)
            else:
                self.core.delete_namespaced_service(name, namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise

    def _write(self, job: dict[str, Any], old: dict[str, Any], status: dict[str, Any]) -> None:
        if status == old:
            return
        meta = job["metadata"]
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
            )
        except client.ApiException as error:
            if error.status != 404:
                raise


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))
