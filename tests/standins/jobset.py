"""A stand-in for JobSet v0.12.0 (kubernetes-sigs/jobset), as Kubeflow Trainer v2.3.0 installs it.

Written from kubernetes-sigs/jobset v0.12.0 (paths under pkg/); the JobSet CRD is upstream's,
served from shared/upstream-crds.

- JobSet's defaulter (webhooks/jobset_webhook.go `Default`): successPolicy All, startupPolicy
  AnyOrder, completionMode Indexed and restartPolicy OnFailure where unset, DNS hostnames and
  publishNotReadyAddresses on; its validator refuses a JobSet whose longest pod name
  `<jobset>-<rjob>-<jobIndex>-<podIndex>-abcde` would pass 63 characters.
- the controller (controllers/jobset_controller.go `reconcile`): replicatedJobsStatus
  (ready, succeeded, failed, active, suspended Jobs); a finished JobSet deletes its active
  Jobs; a failed Job fails a JobSet without failurePolicy (`FailedJobs`, `jobset failed due to
  one or more job failures (first failed job: <job>)`, controllers/failure_policy.go); all Jobs
  complete it (`AllJobsCompleted`, `jobset completed successfully`); the headless Service
  `<jobset>` (selector jobset-name, publishNotReadyAddresses); Jobs `<jobset>-<rjob>-<index>`
  labelled and annotated with the jobset and replicatedJob names and the job index, pods with
  subdomain `<jobset>` (`constructJob`), suspended with the JobSet and resumed by it.

Not modelled: failure policies, restarts, startup order, exclusive placement, volume claim
policies, TTL after finished, coordinators.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from tests.kube import emulator
from tests.kube.resources import Kind
from tests.standins.events import now
from tests.standins.webhooks import WebhookController

JOBSET = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
JOBSET_UID = "jobset.sigs.k8s.io/jobset-uid"
REPLICATED_JOB_NAME = "jobset.sigs.k8s.io/replicatedjob-name"
REPLICATED_JOB_REPLICAS = "jobset.sigs.k8s.io/replicatedjob-replicas"
JOB_INDEX = "jobset.sigs.k8s.io/job-index"
RESTARTS = "jobset.sigs.k8s.io/restart-attempt"
JOBSET_WEBHOOK = "vjobset.kb.io"
POD_NAME_TOO_LONG = "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters"

Obj = dict[str, Any]


def longest_pod_name(jobset: Obj) -> list[str]:
    """JobSet's webhook check of each Indexed replicatedJob's longest pod name."""
    too_long = []
    for index, rjob in enumerate(jobset["spec"].get("replicatedJobs") or []):
        spec = rjob["template"]["spec"]
        if spec.get("completionMode") != "Indexed" or spec.get("completions") is None:
            continue
        replicas = int(rjob.get("replicas", 1))
        job_name = f"{jobset['metadata']['name']}-{rjob['name']}-{replicas - 1}"
        if len(f"{job_name}-{int(spec['completions']) - 1}-abcde") > 63:
            too_long.append(
                f'spec.replicatedJobs[{index}].name: Invalid value: "{job_name}": {POD_NAME_TOO_LONG}'
            )
    return too_long


def default_jobset(jobset: Obj) -> None:
    """JobSet's defaulting webhook."""
    spec = jobset.setdefault("spec", {})
    spec.setdefault("successPolicy", {"operator": "All"})
    spec.setdefault("startupPolicy", {"startupPolicyOrder": "AnyOrder"})
    for rjob in spec.get("replicatedJobs") or []:
        job_spec = rjob.setdefault("template", {}).setdefault("spec", {})
        job_spec.setdefault("completionMode", "Indexed")
        pod_spec = job_spec.setdefault("template", {}).setdefault("spec", {})
        pod_spec.setdefault("restartPolicy", "OnFailure")
    network = spec.setdefault("network", {})
    network.setdefault("enableDNSHostnames", True)
    network.setdefault("publishNotReadyAddresses", True)


@dataclass
class JobSetController(WebhookController):
    """JobSet's webhooks and controller against the emulated API server."""

    def default(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        if (kind.group, kind.plural) == (JOBSET, "jobsets"):
            default_jobset(obj)

    def validate(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        if (kind.group, kind.plural) != (JOBSET, "jobsets"):
            return
        errors = longest_pod_name(obj)
        if errors:
            listed = ", ".join(errors)
            raise emulator.refused(
                403, "Forbidden", f'admission webhook "{JOBSET_WEBHOOK}" denied the request: {listed}'
            )

    def step(self) -> None:
        try:
            jobsets = self.custom.list_cluster_custom_object(JOBSET, JOBSET_VERSION, "jobsets")["items"]
        except client.ApiException as error:
            if error.status == 404:
                return  # not installed
            raise
        for jobset in jobsets:
            if not jobset["metadata"].get("deletionTimestamp"):
                self.reconcile(jobset)

    def reconcile(self, jobset: Obj) -> None:
        meta, spec = jobset["metadata"], jobset["spec"]
        namespace = meta["namespace"]
        status = copy.deepcopy(jobset.get("status") or {})
        conditions = status.setdefault("conditions", [])
        jobs = [
            job
            for job in json.loads(self.batch.list_namespaced_job(namespace, _preload_content=False).data)[
                "items"
            ]
            if any(
                o.get("uid") == meta["uid"] and o.get("controller")
                for o in job["metadata"].get("ownerReferences") or []
            )
        ]
        finished_types = {"Complete", "Failed"}

        def ended(job: Obj, type_: str) -> bool:
            return any(
                c["type"] == type_ and c["status"] == "True"
                for c in (job.get("status") or {}).get("conditions") or []
            )

        failed = [j for j in jobs if ended(j, "Failed")]
        successful = [j for j in jobs if ended(j, "Complete")]
        active = [j for j in jobs if not any(ended(j, t) for t in finished_types)]
        statuses = []
        for rjob in spec.get("replicatedJobs") or []:
            mine = [
                j
                for j in jobs
                if (j["metadata"].get("labels") or {}).get(REPLICATED_JOB_NAME) == rjob["name"]
            ]
            counts = {
                "name": rjob["name"],
                "ready": 0,
                "succeeded": 0,
                "failed": 0,
                "active": 0,
                "suspended": 0,
            }
            for job in mine:
                job_status = job.get("status") or {}
                if job in active:
                    pods = min(
                        int(job["spec"].get("parallelism", 1)), int(job["spec"].get("completions") or 1 << 30)
                    )
                    if int(job_status.get("succeeded", 0)) + int(job_status.get("ready", 0)) >= pods:
                        counts["ready"] += 1
                    if int(job_status.get("active", 0)) > 0:
                        counts["active"] += 1
                    if job["spec"].get("suspend") is True:
                        counts["suspended"] += 1
                elif job in successful:
                    counts["succeeded"] += 1
                else:
                    counts["failed"] += 1
            statuses.append(counts)
        status["replicatedJobsStatus"] = statuses
        if finished(jobset):
            for job in active:
                self._delete_job(job)
        elif failed:
            first = min(failed, key=lambda j: _failure_time(j))
            first_name = first["metadata"]["name"]
            message = f"jobset failed due to one or more job failures (first failed job: {first_name})"
            set_condition(conditions, "Failed", "True", "FailedJobs", message)
            self.events.append((meta["name"], "FailedJobs", message))
        elif successful and len(successful) == sum(
            int(r.get("replicas", 1)) for r in spec.get("replicatedJobs") or []
        ):
            set_condition(
                conditions, "Completed", "True", "AllJobsCompleted", "jobset completed successfully"
            )
            self.events.append((meta["name"], "AllJobsCompleted", "jobset completed successfully"))
        else:
            self._headless_service(jobset)
            self._jobs(jobset, jobs)
            suspended = spec.get("suspend") is True
            if suspended:
                set_condition(conditions, "Suspended", "True", "SuspendedJobs", "jobset is suspended")
            elif (condition(status, "Suspended") or {}).get("status") == "True":
                set_condition(conditions, "Suspended", "False", "ResumeJobs", "jobset is resumed")
        if status != (jobset.get("status") or {}):
            self.custom.patch_namespaced_custom_object_status(
                JOBSET, JOBSET_VERSION, namespace, "jobsets", meta["name"], {"status": status}
            )

    def _headless_service(self, jobset: Obj) -> None:
        meta, network = jobset["metadata"], jobset["spec"].get("network") or {}
        if network.get("enableDNSHostnames") is False:
            return
        subdomain = network.get("subdomain") or meta["name"]
        try:
            self.core.read_namespaced_service(subdomain, meta["namespace"], _preload_content=False)
            return
        except client.ApiException as error:
            if error.status != 404:
                raise
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": subdomain,
                "namespace": meta["namespace"],
                "ownerReferences": [_owner(jobset)],
            },
            "spec": {
                "clusterIP": "None",
                "selector": {JOBSET_NAME: meta["name"]},
                "publishNotReadyAddresses": network.get("publishNotReadyAddresses", True),
            },
        }
        self.core.create_namespaced_service(meta["namespace"], service, _preload_content=False)

    def _jobs(self, jobset: Obj, jobs: list[Obj]) -> None:
        """`reconcileReplicatedJobs` (create what is missing) and suspend/resume of the rest."""
        meta, spec = jobset["metadata"], jobset["spec"]
        suspended = spec.get("suspend") is True
        by_name = {job["metadata"]["name"]: job for job in jobs}
        for rjob in spec.get("replicatedJobs") or []:
            for index in range(int(rjob.get("replicas", 1))):
                name = f"{meta['name']}-{rjob['name']}-{index}"
                job = by_name.get(name)
                if job is None:
                    self.batch.create_namespaced_job(
                        meta["namespace"], construct_job(jobset, rjob, index), _preload_content=False
                    )
                elif bool(job["spec"].get("suspend")) != suspended:
                    patch: Obj = {"spec": {"suspend": suspended}}
                    if not suspended:  # resumeJobsIfNecessary: the template's scheduling from the JobSet
                        pod = rjob["template"]["spec"]["template"]
                        patch["spec"]["template"] = {
                            "metadata": {"labels": (pod.get("metadata") or {}).get("labels") or {}},
                            "spec": {
                                k: pod["spec"][k]
                                for k in ("nodeSelector", "tolerations", "schedulingGates")
                                if k in pod["spec"]
                            },
                        }
                    self.batch.patch_namespaced_job(name, meta["namespace"], patch)

    def _delete_job(self, job: Obj) -> None:
        try:
            self.batch.delete_namespaced_job(
                job["metadata"]["name"], job["metadata"]["namespace"], propagation_policy="Foreground"
            )
        except client.ApiException as error:
            if error.status != 404:
                raise


def construct_job(jobset: Obj, rjob: Obj, index: int) -> Obj:
    """`constructJob`: the replicatedJob's template, labelled, annotated and placed."""
    meta = jobset["metadata"]
    name = f"{meta['name']}-{rjob['name']}-{index}"
    template = copy.deepcopy(rjob["template"])
    stamp = {
        JOBSET_NAME: meta["name"],
        JOBSET_UID: meta["uid"],
        REPLICATED_JOB_NAME: rjob["name"],
        RESTARTS: str((jobset.get("status") or {}).get("restarts", 0)),
        REPLICATED_JOB_REPLICAS: str(rjob.get("replicas", 1)),
        JOB_INDEX: str(index),
    }
    job_meta = template.get("metadata") or {}
    pod = template["spec"]["template"]
    pod_meta = pod.setdefault("metadata", {})
    for target in (job_meta, pod_meta):
        target["labels"] = {**(target.get("labels") or {}), **stamp}
        target["annotations"] = {**(target.get("annotations") or {}), **stamp}
    network = jobset["spec"].get("network") or {}
    if network.get("enableDNSHostnames", True):
        pod["spec"]["subdomain"] = network.get("subdomain") or meta["name"]
    template["spec"]["suspend"] = jobset["spec"].get("suspend") is True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **job_meta,
            "name": name,
            "namespace": meta["namespace"],
            "ownerReferences": [_owner(jobset)],
        },
        "spec": template["spec"],
    }


def _owner(jobset: Obj) -> Obj:
    return {
        "apiVersion": f"{JOBSET}/{JOBSET_VERSION}",
        "kind": "JobSet",
        "name": jobset["metadata"]["name"],
        "uid": jobset["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def finished(obj: Obj) -> bool:
    return any(
        c["type"] in ("Complete", "Completed", "Failed") and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _failure_time(job: Obj) -> str:
    failed = next((c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == "Failed"), {})
    return str(failed.get("lastTransitionTime", ""))


def set_condition(
    conditions: list[Obj], type_: str, status: str, reason: str, message: str, source: Obj | None = None
) -> None:
    """`meta.SetStatusCondition`: the transition time moves only when the status does."""
    current = next((c for c in conditions if c["type"] == type_), None)
    if current is not None and (current["status"], current.get("reason"), current.get("message")) == (
        status,
        reason,
        message,
    ):
        return
    stamp = (source or {}).get("lastTransitionTime") or now()
    if current is not None and current["status"] == status:
        stamp = current.get("lastTransitionTime", stamp)
    new = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}
    if current is None:
        conditions.append(new)
    else:
        conditions[conditions.index(current)] = new
