"""A stand-in for Kubeflow Trainer v2.3.0 (TrainJob); JobSet v0.12.0, which it installs, is
`tests.standins.jobset`.

Written from kubeflow/trainer v2.3.0 (facts with their sources in shared/trainer-v2.md; paths
below are under pkg/). The kinds are the upstream CRDs (TrainJob, ClusterTrainingRuntime,
TrainingRuntime), which the emulator serves from shared/upstream-crds.

Webhooks, as emulator admission plugins (creates only):
- Trainer's TrainJob defaulter stamps every runtime patch with `time` (webhooks/
  trainjob_webhook.go `Default`); its validator (`ValidateCreate` -> the runtime's
  `ValidateObjects`, then the plugins' `Validate`) refuses, as one aggregate (403, Denied): a
  ClusterTrainingRuntime that does not exist (`spec.RuntimeRef: Invalid value: ...: <the get
  error>: specified clusterTrainingRuntime must be created before the TrainJob is created`,
  runtime/core/clustertrainingruntime.go), PET_* names torchrun reserves in `trainer.env`
  (framework/plugins/torch/torch.go), and runtime patches that name a replicatedJob or container
  the runtime lacks or give env to the `node` container (framework/plugins/jobset/jobset.go).

The TrainJob controller, stepped by `step` (controller/trainjob_controller.go `Reconcile`), for TrainJobs not
  finished and not managed elsewhere: reads the runtime (a missing one is the error `not found
  ClusterTrainingRuntime specified in TrainJob: clustertrainingruntimes.trainer.kubeflow.org
  "<name>" not found`), merges the runtime patches into its template as a strategic merge patch
  (`mergeRuntimePatches`, runtime/core/trainingruntime.go; lists keyed as in the Go types:
  replicatedJobs, containers, volumes, env, imagePullSecrets and schedulingGates by name,
  volumeMounts by mountPath, ports by containerPort; others replaced), merges resourcesPerNode
  into the `node` container (v2.3, #3602), applies the torch plugin (trainer.env, then PET_NNODES,
  PET_NPROC_PER_NODE, PET_NODE_RANK from the completion index annotation, PET_MASTER_ADDR
  `<name>-node-0-0.<name>`, PET_MASTER_PORT 29500, containerPort 29500), parallelism and
  completions = numNodes, replicas 1, the trainer's image, command and args on the `node`
  container (framework/plugins/jobset/builder.go), the TrainJob's suspend, and creates the
  JobSet `<name>` it owns; an existing JobSet is rebuilt only while one of them is suspended
  (framework/plugins/jobset/jobset.go `Build`). An error is only the Warning event
  `TrainJobResourcesCreationFailed`, `TrainJob resources reconciliation failed: <error>`, on the
  events.k8s.io/v1 API. The status: Suspended True (`Suspended`, `TrainJob is suspended`) or,
  after that, False (`Resumed`, `TrainJob is resumed`); the JobSet's Completed and Failed
  conditions copied as Complete and Failed; `jobsStatus` from its replicatedJobsStatus.

Not modelled: the runtime snapshot ConfigMap (v2.3), TrainingRuntime (namespaced) lookups,
activeDeadlineSeconds, MPI, torchtune, initializers, podGroupPolicy, and updates through the
webhooks.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from tests.kube import emulator
from tests.kube.resources import Kind
from tests.standins.events import Recorder, now
from tests.standins.jobset import JOBSET, JOBSET_VERSION, condition, finished, set_condition
from tests.standins.webhooks import WebhookController

TRAINER = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
NODE = "node"
MASTER_PORT = 29500
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
"""`constants.TorchRunReservedEnvNames`"""
COMPLETION_INDEX_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
TRAINER_WEBHOOK = "validator.trainjob.trainer.kubeflow.org"
RUNTIME_MISSING = "specified clusterTrainingRuntime must be created before the TrainJob is created"
MERGE_KEYS = {
    "replicatedJobs": "name",
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "schedulingGates": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
"""The `patchMergeKey` of each list a runtime patch touches (k8s.io/api core/v1 types.go,
jobset api/jobset/v1alpha2/jobset_types.go); any other list is replaced."""

Obj = dict[str, Any]


def strategic_merge(target: Any, patch: Any, key: str = "") -> Any:
    """`strategicpatch.StrategicMergePatch` for the fields above: maps merged, null deletes,
    keyed lists merged item by item (patch items last), other lists and scalars replaced."""
    if isinstance(patch, dict) and isinstance(target, dict):
        merged = copy.deepcopy(target)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = strategic_merge(merged.get(name), value, name)
        return merged
    if isinstance(patch, list) and isinstance(target, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged_list = copy.deepcopy(target)
        for item in patch:
            found = next(
                (i for i, old in enumerate(merged_list) if old.get(merge_key) == item.get(merge_key)), None
            )
            if found is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[found] = strategic_merge(merged_list[found], item)
        return merged_list
    return copy.deepcopy(patch)


def upsert(items: list[Obj], new: Obj, key: str = "name") -> None:
    """`apply.UpsertEnvVars` / `UpsertPort`: replace the item of that key, else append."""
    for i, old in enumerate(items):
        if old.get(key) == new.get(key):
            items[i] = new
            return
    items.append(new)


def _containers_by_job(runtime: Obj) -> dict[str, set[str]]:
    jobs = (((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
    return {
        job["name"]: {
            c["name"]
            for c in [
                *(job["template"]["spec"]["template"]["spec"].get("initContainers") or []),
                *(job["template"]["spec"]["template"]["spec"].get("containers") or []),
            ]
        }
        for job in jobs
    }


def go_value(ref: Obj) -> str:
    """How `field.Invalid` prints a RuntimeRef struct (`%#v`, its pointers as addresses)."""
    return (
        f'v1alpha1.RuntimeRef{{Name:"{ref.get("name", "")}", APIGroup:(*string)(0xc000a1b2c0), '
        "Kind:(*string)(0xc000a1b2d0)}"
    )


@dataclass
class TrainerV2(WebhookController):
    """Trainer's webhooks and TrainJob controller against the emulated API server."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.recorder = Recorder(self.api_client, "trainer", events_v1=True, action="Reconciling")

    # ------------------------------------------------------------------ webhooks

    def default(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        if (kind.group, kind.plural) == (TRAINER, "trainjobs"):
            for patch in obj.get("spec", {}).get("runtimePatches") or []:
                patch.setdefault("time", now())

    def validate(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        if (kind.group, kind.plural) != (TRAINER, "trainjobs"):
            return
        ref = (obj.get("spec") or {}).get("runtimeRef") or {}
        errors = trainjob_errors(obj, self._runtime(server, ref.get("name", "")))
        if errors:
            listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise emulator.refused(
                403, "Forbidden", f'admission webhook "{TRAINER_WEBHOOK}" denied the request: {listed}'
            )

    def _runtime(self, server: emulator.ApiServer | None, name: str) -> Obj | None:
        if server is not None:  # inside admission: read the store, as the webhook's cache does
            return server.objects.get((TRAINER, TRAINER_VERSION, "clustertrainingruntimes", None, name))
        try:
            found: Obj = self.custom.get_cluster_custom_object(
                TRAINER, TRAINER_VERSION, "clustertrainingruntimes", name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    # ------------------------------------------------------------------ controllers

    def step(self) -> None:
        for trainjob in self._list(TRAINER, TRAINER_VERSION, "trainjobs"):
            if not trainjob["metadata"].get("deletionTimestamp"):
                self.reconcile_trainjob(trainjob)

    def _list(self, group: str, version: str, plural: str) -> list[Obj]:
        try:
            return list(self.custom.list_cluster_custom_object(group, version, plural)["items"])
        except client.ApiException as error:
            if error.status == 404:
                return []  # not installed
            raise

    # -- TrainJob

    def reconcile_trainjob(self, trainjob: Obj) -> None:
        spec = trainjob["spec"]
        if spec.get("managedBy", f"{TRAINER}/trainjob-controller") != f"{TRAINER}/trainjob-controller":
            return
        meta = trainjob["metadata"]
        status = copy.deepcopy(trainjob.get("status") or {})
        conditions = status.setdefault("conditions", [])
        conditions[:] = [c for c in conditions if c["type"] != "Failed"]  # removeFailedCondition
        if not finished(trainjob):
            try:
                self._apply_jobset(trainjob)
            except ReconcileError as error:
                message = f"TrainJob resources reconciliation failed: {str(error)[:950]}"
                self.events.append((meta["name"], "TrainJobResourcesCreationFailed", message))
                self.recorder.event(trainjob, "Warning", "TrainJobResourcesCreationFailed", message)
        suspended = spec.get("suspend") is True
        previous = condition(status, "Suspended")
        if suspended:
            set_condition(conditions, "Suspended", "True", "Suspended", "TrainJob is suspended")
        elif previous is not None and previous["status"] == "True":
            set_condition(conditions, "Suspended", "False", "Resumed", "TrainJob is resumed")
        jobset = self._get_jobset(meta["namespace"], meta["name"])
        if jobset is not None:
            js_status = jobset.get("status") or {}
            for js_type, tj_type in (("Completed", "Complete"), ("Failed", "Failed")):
                found = condition(js_status, js_type)
                if found is not None and found["status"] == "True":
                    set_condition(
                        conditions, tj_type, "True", found.get("reason", ""), found.get("message", ""), found
                    )
            status["jobsStatus"] = [
                {k: rjob.get(k, 0) for k in ("name", "ready", "succeeded", "failed", "active", "suspended")}
                for rjob in js_status.get("replicatedJobsStatus") or []
            ]
        if not status["conditions"]:
            del status["conditions"]
        if status != (trainjob.get("status") or {}):
            self.custom.patch_namespaced_custom_object_status(
                TRAINER, TRAINER_VERSION, meta["namespace"], "trainjobs", meta["name"], {"status": status}
            )

    def _get_jobset(self, namespace: str, name: str) -> Obj | None:
        try:
            found: Obj = self.custom.get_namespaced_custom_object(
                JOBSET, JOBSET_VERSION, namespace, "jobsets", name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def _apply_jobset(self, trainjob: Obj) -> None:
        meta, spec = trainjob["metadata"], trainjob["spec"]
        old = self._get_jobset(meta["namespace"], meta["name"])
        if old is not None and spec.get("suspend") is not True and (old["spec"].get("suspend") is not True):
            return  # a running JobSet is never rebuilt
        ref = spec.get("runtimeRef") or {}
        runtime = self._runtime(None, ref.get("name", ""))
        if runtime is None:
            raise ReconcileError(
                "not found ClusterTrainingRuntime specified in TrainJob: "
                f'clustertrainingruntimes.{TRAINER} "{ref.get("name", "")}" not found'
            )
        jobset = self.build_jobset(trainjob, runtime)
        if old is None:
            try:
                self.custom.create_namespaced_custom_object(
                    JOBSET, JOBSET_VERSION, meta["namespace"], "jobsets", jobset
                )
            except client.ApiException as error:
                raise ReconcileError(
                    json.loads(error.body or "{}").get("message") or str(error.reason)
                ) from None
            return
        # Server-side apply of the rebuilt spec (suspend, and the template while suspended).
        self.custom.patch_namespaced_custom_object(
            JOBSET, JOBSET_VERSION, meta["namespace"], "jobsets", meta["name"], {"spec": jobset["spec"]}
        )

    @staticmethod
    def build_jobset(trainjob: Obj, runtime: Obj) -> Obj:
        """The JobSet Trainer builds from the runtime, the TrainJob's patches and its trainer."""
        meta, spec = trainjob["metadata"], trainjob["spec"]
        template = copy.deepcopy(runtime["spec"]["template"])
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        js_spec = template.get("spec") or {}
        for patch in spec.get("runtimePatches") or []:
            patched = (patch.get("trainingRuntimeSpec") or {}).get("template") or {}
            labels.update((patched.get("metadata") or {}).get("labels") or {})
            annotations.update((patched.get("metadata") or {}).get("annotations") or {})
            if patched.get("spec"):
                js_spec = strategic_merge(js_spec, patched["spec"])
        trainer = spec.get("trainer") or {}
        ml_policy = runtime["spec"].get("mlPolicy") or {}
        name = meta["name"]
        for rjob in js_spec.get("replicatedJobs") or []:
            job_labels = (rjob.get("template", {}).get("metadata") or {}).get("labels") or {}
            if job_labels.get(ANCESTOR_LABEL) != "trainer":
                continue
            count = int(trainer.get("numNodes") or ml_policy.get("numNodes") or 1)
            job_spec = rjob["template"]["spec"]
            job_spec["parallelism"] = job_spec["completions"] = count
            rjob["replicas"] = 1
            gpus = 0
            for container in job_spec["template"]["spec"].get("containers") or []:
                if container["name"] != NODE:
                    continue
                if trainer.get("resourcesPerNode"):  # MergeResourceRequirements (v2.3)
                    resources = container.setdefault("resources", {})
                    for part in ("requests", "limits"):
                        if trainer["resourcesPerNode"].get(part):
                            resources.setdefault(part, {}).update(trainer["resourcesPerNode"][part])
                for key in ("image", "command", "args"):
                    if trainer.get(key) is not None:
                        container[key] = copy.deepcopy(trainer[key])
                env = container.setdefault("env", [])
                for item in trainer.get("env") or []:
                    upsert(env, copy.deepcopy(item))
                resources = container.get("resources") or {}
                gpus = sum(
                    int(v)
                    for part in ("limits", "requests")
                    for k, v in (resources.get(part) or {}).items()
                    if "gpu" in k
                )
                procs = trainer.get("numProcPerNode")
                if procs is None:
                    cpu = str(
                        (resources.get("requests") or {}).get("cpu")
                        or (resources.get("limits") or {}).get("cpu")
                        or "0"
                    )
                    procs = (
                        "auto"
                        if gpus
                        else max(1, int(float(cpu.rstrip("m")) / (1000 if cpu.endswith("m") else 1)))
                    )
                for item in (
                    {"name": "PET_NNODES", "value": str(count)},
                    {"name": "PET_NPROC_PER_NODE", "value": str(procs)},
                    {
                        "name": "PET_NODE_RANK",
                        "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_PATH}},
                    },
                    {"name": "PET_MASTER_ADDR", "value": f"{name}-{NODE}-0-0.{name}"},
                    {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
                ):
                    upsert(env, item)
                upsert(container.setdefault("ports", []), {"containerPort": MASTER_PORT}, "containerPort")
        if spec.get("suspend") is not None:
            js_spec["suspend"] = spec["suspend"]
        return {
            "apiVersion": f"{JOBSET}/{JOBSET_VERSION}",
            "kind": "JobSet",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                **({"labels": labels} if labels else {}),
                **({"annotations": annotations} if annotations else {}),
                "ownerReferences": [
                    {
                        "apiVersion": f"{TRAINER}/{TRAINER_VERSION}",
                        "kind": "TrainJob",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": js_spec,
        }

    # -- JobSet


def trainjob_errors(obj: Obj, runtime: Obj | None) -> list[str]:
    """Every refusal of the TrainJob validator against its runtime (absent: None), a missing
    runtime first, as then no plugin runs."""
    spec = obj.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    if runtime is None:
        error = f'clustertrainingruntimes.{TRAINER} "{ref.get("name", "")}" not found'
        return [f"spec.RuntimeRef: Invalid value: {go_value(ref)}: {error}: {RUNTIME_MISSING}"]
    errors = []
    env = (spec.get("trainer") or {}).get("env") or []
    reserved = sorted({e["name"] for e in env if e.get("name") in RESERVED_ENV})
    if reserved:
        errors.append(
            f"spec.trainer.env: Invalid value: {json.dumps(env)}: must not have reserved envs, "
            f"invalid envs configured: [{' '.join(reserved)}]"
        )
    containers = _containers_by_job(runtime)
    patches = spec.get("runtimePatches") or []
    for patch in patches:
        rjobs = ((((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")) or {}).get(
            "replicatedJobs"
        ) or []
        for rjob in rjobs:
            if rjob.get("name") not in containers:
                errors.append(
                    "spec.runtimePatches: Invalid value: ...: must not have replicated job that doesn't "
                    "exist in the runtime job template"
                )
                continue
            pod = ((((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
            for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
                if container.get("name") not in containers[rjob["name"]]:
                    errors.append(
                        "spec.runtimePatches: Invalid value: ...: must not have container that doesn't "
                        f"exist in the runtime job {rjob['name']}"
                    )
                elif container.get("env") and container["name"] == NODE:
                    errors.append(
                        "spec.runtimePatches: Invalid value: ...: must not have envs for the "
                        "dataset-initializer, model-initializer, node containers"
                    )
    return errors


class ReconcileError(Exception):
    """An error of `reconcileObjects`, surfaced only as an event."""
