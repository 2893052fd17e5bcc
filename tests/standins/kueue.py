"""A stand-in for Kueue v0.19.2 (kubernetes-sigs/kueue) as its release manifests install it.

Kueue manages only the frameworks its configuration lists (`integrations.frameworks`); the
shipped configuration of v0.19 (config/components/manager/controller_manager_config.yaml)
has `kubeflow.org/pytorchjob` and `sparkoperator.k8s.io/sparkapplication` commented out
("kubeflow training v1 is being deprecated", kueue #12606) and `trainer.kubeflow.org/trainjob`,
`batch/job` and `pod` on (`FRAMEWORKS_V0_19`). For a framework that is off, its webhooks are
no-ops (`WithNoopWebhook`, pkg/controller/jobframework/setup.go): nothing suspends, validates
or admits that kind.

For a managed kind:
- the mutating webhook (`BaseWebhook.Default`, jobframework/base_webhook.go) suspends a job
  created with a queue name, or any job when `manageJobsWithoutQueueName`, unless an
  ancestor is a job Kueue manages (`ApplyDefaultForSuspend`, `WorkloadShouldBeSuspended`,
  jobframework/defaults.go, utils.go);
- the validating webhook (`ValidateCreate` -> `ValidateJobOnCreate` -> `ValidateQueueName`,
  jobframework/validation.go) refuses a queue name that is not a DNS-1123 subdomain:
  403 `admission webhook "v<kind>.kb.io" denied the request: metadata.labels[kueue.x-k8s.io/
  queue-name]: Invalid value: ...` (an aggregate error, which controller-runtime answers as
  Denied);
- the job reconciler creates a Workload `<kind>-<name>-<5 hex of sha1>` (`GenerateWorkload
  NameWithExtra`, jobframework/workload_names.go) owned by the job and labelled
  `kueue.x-k8s.io/job-uid`; the scheduler admits it when its LocalQueue exists (QuotaReserved
  and Admitted True; this stand-in has room for everything), else QuotaReserved False,
  reason Misconfigured, `LocalQueue <name> doesn't exist` (`getQueueBlocker`,
  core/workload_controller.go); an admitted job is unsuspended.

A TrainJob (pkg/controller/jobs/trainjob): its webhook always appends an empty runtime patch of
manager `kueue.x-k8s.io/manager` (trainjob_webhook.go `Default`); on admission Kueue writes the
pod sets' labels, annotations, nodeSelector and tolerations into that patch, updates the
TrainJob while it is still suspended, then resumes it (`RunWithPodSetsInfo`,
trainjob_controller.go: "kueue runtime patch not found" if the patch was dropped).

An owner is looked up the whole chain (`FindAncestorJobManagedByKueue`, jobframework/
reconciler.go): a job or pod under a managed job with a queue name is left to that job.

The `pod` integration (pkg/controller/jobs/pod/pod_webhook.go `Default`): a pod whose owner
is not a job Kueue manages, with a queue name (or any, with `manageJobsWithoutQueueName`),
gets the label `kueue.x-k8s.io/managed: "true"` and the scheduling gate
`kueue.x-k8s.io/admission`, removed once its Workload is admitted. Not modelled: the pod
finalizer, pod groups, ClusterQueues, quotas, preemption, priorities, MultiKueue.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from tests.kube import emulator
from tests.kube.resources import Kind
from tests.standins.events import now

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
MANAGED_LABEL = "kueue.x-k8s.io/managed"
POD_GATE = "kueue.x-k8s.io/admission"
FRAMEWORKS_V0_19 = (
    "batch/job",
    "kubeflow.org/mpijob",
    "ray.io/rayjob",
    "ray.io/raycluster",
    "ray.io/rayservice",
    "jobset.x-k8s.io/jobset",
    "workload.codeflare.dev/appwrapper",
    "trainer.kubeflow.org/trainjob",
    "pod",
    "deployment",
    "statefulset",
    "leaderworkerset.x-k8s.io/leaderworkerset",
)
"""`integrations.frameworks` of v0.19's shipped controller_manager_config.yaml."""
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
"""`IsDNS1123Subdomain`'s message (apimachinery/pkg/util/validation/validation.go)."""

RUNTIME_PATCH_MANAGER = "kueue.x-k8s.io/manager"
PODSET_LABEL = "kueue.x-k8s.io/podset"
WORKLOAD = Kind(GROUP, VERSION, "workloads", "Workload", short_names=("wl",))
LOCAL_QUEUE = Kind(GROUP, VERSION, "localqueues", "LocalQueue", short_names=("queue", "queues", "lq"))
"""Served without a schema: these are the stand-in's own kinds, not Kueue's CRDs."""


@dataclass(frozen=True)
class Integration:
    """A job kind Kueue can manage: where it lives, and where its suspend flag is."""

    framework: str
    group: str
    version: str
    plural: str
    kind: str
    suspend_path: tuple[str, ...]

    @property
    def webhook(self) -> str:
        return f"v{self.kind.lower()}.kb.io"

    def suspended(self, obj: dict[str, Any]) -> bool:
        value: Any = obj
        for key in self.suspend_path:
            value = value.get(key) if isinstance(value, dict) else None
        return value is True

    def set_suspend(self, obj: dict[str, Any], value: bool) -> None:
        target = obj
        for key in self.suspend_path[:-1]:
            target = target.setdefault(key, {})
        target[self.suspend_path[-1]] = value


INTEGRATIONS = {
    integration.framework: integration
    for integration in (
        Integration("batch/job", "batch", "v1", "jobs", "Job", ("spec", "suspend")),
        Integration(
            "kubeflow.org/pytorchjob",
            "kubeflow.org",
            "v1",
            "pytorchjobs",
            "PyTorchJob",
            ("spec", "runPolicy", "suspend"),
        ),
        Integration(
            "trainer.kubeflow.org/trainjob",
            "trainer.kubeflow.org",
            "v1alpha1",
            "trainjobs",
            "TrainJob",
            ("spec", "suspend"),
        ),
        Integration(
            "jobset.x-k8s.io/jobset", "jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", ("spec", "suspend")
        ),
        Integration(
            "sparkoperator.k8s.io/sparkapplication",
            "sparkoperator.k8s.io",
            "v1beta2",
            "sparkapplications",
            "SparkApplication",
            ("spec", "suspend"),
        ),
    )
}


def workload_name(kind: str, name: str, uid: str, group: str) -> str:
    """`GenerateWorkloadNameWithExtra` with Kueue's default (long) names."""
    digest = hashlib.sha1(f"{kind}\n{group}\n{name}\n{uid}".encode()).hexdigest()
    return f"{(kind.lower() + '-' + name)[: 253 - 1 - 5]}-{digest[:5]}"


@dataclass
class Kueue:
    """The webhooks (as emulator admission plugins) and the reconcilers, stepped by `step`."""

    api_client: Any
    frameworks: tuple[str, ...] = FRAMEWORKS_V0_19
    manage_jobs_without_queue_name: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def install(self, server: emulator.ApiServer, register: Callable[[Kind], None]) -> None:
        """Serve Workloads and LocalQueues and put the webhooks in front of the API server."""
        register(WORKLOAD)
        register(LOCAL_QUEUE)
        server.mutating.append(self.default)
        server.validating.append(self.validate)

    def _integration(self, kind: Kind) -> Integration | None:
        for framework in self.frameworks:
            integration = INTEGRATIONS.get(framework)
            if integration and (integration.group, integration.plural) == (kind.group, kind.plural):
                return integration
        return None

    def _should_suspend(self, server: emulator.ApiServer, obj: dict[str, Any]) -> bool:
        if self._managed_ancestor(server, obj):
            return False
        return bool(_queue(obj)) or self.manage_jobs_without_queue_name

    def _managed_ancestor(self, server: emulator.ApiServer, obj: dict[str, Any]) -> bool:
        """`FindAncestorJobManagedByKueue`: up the controller owners while they are kinds Kueue
        knows, one of a managed kind with a queue (or any, with manageJobsWithoutQueueName)."""
        namespace = obj["metadata"].get("namespace")
        current, seen = obj, set()
        while True:
            owner = next(
                (o for o in current["metadata"].get("ownerReferences") or [] if o.get("controller")), None
            )
            if owner is None or owner.get("uid") in seen:
                return False
            seen.add(owner.get("uid"))
            group, _, version = owner.get("apiVersion", "").rpartition("/")
            known = [
                i
                for i in INTEGRATIONS.values()
                if (i.group, i.version, i.kind) == (group, version, owner.get("kind"))
            ]
            if not known:
                return False
            integration = known[0]
            key = (integration.group, integration.version, integration.plural, namespace, owner["name"])
            parent = server.objects.get(key)
            if parent is None or parent["metadata"].get("uid") != owner.get("uid"):
                return False
            managed = integration.framework in self.frameworks
            if managed and (_queue(parent) or self.manage_jobs_without_queue_name):
                return True
            current = parent

    def default(self, server: emulator.ApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        """The mutating webhooks (m<kind>.kb.io, mpod.kb.io) of the enabled frameworks."""
        integration = self._integration(kind)
        if integration is not None:
            if self._should_suspend(server, obj) and not integration.suspended(obj):
                integration.set_suspend(obj, True)
            if integration.kind == "TrainJob":
                patch = {"manager": RUNTIME_PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {}}}}
                obj.setdefault("spec", {}).setdefault("runtimePatches", []).append(patch)
            return
        pods = (kind.group, kind.plural) == ("", "pods") and "pod" in self.frameworks
        if pods and self._should_suspend(server, obj):
            obj["metadata"].setdefault("labels", {})[MANAGED_LABEL] = "true"
            gates = obj["spec"].setdefault("schedulingGates", [])
            if {"name": POD_GATE} not in gates:
                gates.append({"name": POD_GATE})

    def validate(self, server: emulator.ApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        """The validating webhooks: the queue name must be a DNS-1123 subdomain."""
        integration = self._integration(kind)
        webhook = integration.webhook if integration else None
        if webhook is None and (kind.group, kind.plural) == ("", "pods") and "pod" in self.frameworks:
            webhook = "vpod.kb.io"
        queue = _queue(obj)
        if webhook is None or queue is None or DNS1123_SUBDOMAIN.fullmatch(queue):
            return
        raise emulator.refused(
            403,
            "Forbidden",
            f'admission webhook "{webhook}" denied the request: metadata.labels[{QUEUE_LABEL}]: '
            f'Invalid value: "{queue}": {SUBDOMAIN_ERROR}',
        )

    # ------------------------------------------------------------------ reconcilers

    def step(self) -> None:
        for framework in self.frameworks:
            integration = INTEGRATIONS.get(framework)
            if integration is None:
                continue
            try:
                jobs = self._list(integration)
            except client.ApiException as error:
                if error.status == 404:
                    continue  # the kind is not installed
                raise
            for job in jobs:
                if not job["metadata"].get("deletionTimestamp"):
                    self._reconcile_job(integration, job)
        if "pod" in self.frameworks:
            pods = json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
            for pod in pods:
                if POD_GATE in {g.get("name") for g in pod["spec"].get("schedulingGates") or []}:
                    self._reconcile_pod(pod)

    def _list(self, integration: Integration) -> list[dict[str, Any]]:
        if integration.group == "batch":
            listed = client.BatchV1Api(self.api_client).list_job_for_all_namespaces(_preload_content=False)
            return list(json.loads(listed.data)["items"])
        found = self.custom.list_cluster_custom_object(
            integration.group, integration.version, integration.plural
        )
        return list(found["items"])

    def _reconcile_job(self, integration: Integration, job: dict[str, Any]) -> None:
        if not (_queue(job) or self.manage_jobs_without_queue_name):
            return
        workload = self._workload(integration.kind, integration.group, job)
        if _admitted(workload) and integration.suspended(job):
            patch: dict[str, Any] = {}
            integration.set_suspend(patch, False)
            meta = job["metadata"]
            if integration.kind == "TrainJob":
                self._write_podset_info(job)
                return
            if integration.group == "batch":
                client.BatchV1Api(self.api_client).patch_namespaced_job(
                    meta["name"], meta["namespace"], patch
                )
            else:
                self.custom.patch_namespaced_custom_object(
                    integration.group,
                    integration.version,
                    meta["namespace"],
                    integration.plural,
                    meta["name"],
                    patch,
                )

    def _write_podset_info(self, trainjob: dict[str, Any]) -> None:
        """`RunWithPodSetsInfo`: the pod sets' info into Kueue's runtime patch, written while the
        TrainJob is suspended (a whole update, as `c.Update`), then resumed."""
        updated = copy.deepcopy(trainjob)
        patches = updated["spec"].get("runtimePatches") or []
        mine = next((p for p in patches if p.get("manager") == RUNTIME_PATCH_MANAGER), None)
        if mine is None:
            raise AssertionError("kueue runtime patch not found")  # upstream returns this error
        mine["trainingRuntimeSpec"] = {
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "spec": {
                                    "template": {"metadata": {"labels": {PODSET_LABEL: "node"}}, "spec": {}}
                                }
                            },
                        }
                    ]
                }
            }
        }
        meta = updated["metadata"]
        updated = self.custom.replace_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", meta["namespace"], "trainjobs", meta["name"], updated
        )
        updated["spec"]["suspend"] = False
        self.custom.replace_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", meta["namespace"], "trainjobs", meta["name"], updated
        )

    def _reconcile_pod(self, pod: dict[str, Any]) -> None:
        workload = self._workload("Pod", "", pod)
        if _admitted(workload):
            gates = [g for g in pod["spec"].get("schedulingGates") or [] if g.get("name") != POD_GATE]
            meta = pod["metadata"]
            self.core.patch_namespaced_pod(
                meta["name"], meta["namespace"], {"spec": {"schedulingGates": gates}}
            )

    def _workload(self, kind: str, group: str, job: dict[str, Any]) -> dict[str, Any]:
        """The job's Workload, created if it has none, and admitted where its LocalQueue exists."""
        meta = job["metadata"]
        namespace, name = meta["namespace"], workload_name(kind, meta["name"], meta["uid"], group)
        try:
            workload: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKLOAD.plural, name
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            api_version = f"{group}/{job.get('apiVersion', 'v1').rpartition('/')[2]}" if group else "v1"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Workload",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {JOB_UID_LABEL: meta["uid"]},
                    "ownerReferences": [
                        {
                            "apiVersion": api_version,
                            "kind": kind,
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {"queueName": _queue(job) or "", "podSets": [{"name": "main", "count": 1}]},
            }
            workload = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKLOAD.plural, body
            )
        status = copy.deepcopy(workload.get("status") or {})
        queue = workload["spec"].get("queueName")
        if queue and not _admitted(workload):
            if self._local_queue_exists(namespace, queue):
                status["conditions"] = [
                    _condition(
                        "QuotaReserved",
                        "True",
                        "QuotaReserved",
                        "Quota reserved in ClusterQueue cluster-queue",
                    ),
                    _condition("Admitted", "True", "Admitted", "The workload is admitted"),
                ]
            else:
                status["conditions"] = [
                    _condition("QuotaReserved", "False", "Misconfigured", f"LocalQueue {queue} doesn't exist")
                ]
            if status != workload.get("status"):
                workload = self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, WORKLOAD.plural, name, {"status": status}
                )
        return workload

    def _local_queue_exists(self, namespace: str, queue: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LOCAL_QUEUE.plural, queue)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


def _queue(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    }


def _admitted(workload: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Admitted" and c.get("status") == "True"
        for c in (workload.get("status") or {}).get("conditions") or []
    )
