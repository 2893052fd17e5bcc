"""A stand-in for kube-controller-manager's Job controller (batch/v1 Job), Kubernetes 1.32.

Written from kubernetes/kubernetes `pkg/controller/job/` (facts and citations in
shared/upstream-behaviour.md, section 5). Each `step` syncs every Job as `syncJob`
(job_controller.go) does, in its order, for Jobs without podFailurePolicy, successPolicy or
backoffLimitPerIndex (Jobs managed by another controller are left alone):

- pods are the Job's by their controller ownerReference (adoption by selector,
  `ClaimPods`, is not done); a pod is active until it is Succeeded, Failed or deleted;
  one deleted before it ended counts as failed (`isPodFailed`, podReplacementPolicy
  TerminatingOrFailed) and as terminating until it is gone (`CountTerminatingPods`);
- startTime is set on the first sync of a Job that is not suspended;
- the Job is doomed when more pods failed than backoffLimit (or, under OnFailure,
  restarts reach it: `pastBackoffLimitOnFailure`): FailureTarget, reason
  BackoffLimitExceeded, `Job has reached the specified backoff limit`; or when it ran
  activeDeadlineSeconds: DeadlineExceeded, `Job was active longer than specified
  deadline` (`newFailureCondition`: FailureTarget, not Failed, as `delayTerminalCondition()`
  holds in 1.32, JobManagedBy and JobPodReplacementPolicy being beta and on). Its
  active pods are then deleted;
- otherwise `manageJob`: a suspended Job's active pods are deleted (finalizer removed
  first, `deleteJobPods`); else missing pods are created from the template
  (`GetPodFromTemplate`, controller_utils.go: generateName `<job>-`, the template's
  labels and annotations, finalizer `batch.kubernetes.io/job-tracking`, the controller
  ownerReference), after the pod-failure back-off (`getRemainingTime`,
  backoff_utils.go: 10 s doubling per failure after the last success, at most 10 min).
  An Indexed Job (indexed_job_utils.go) creates one pod per index neither succeeded nor
  active, lowest first (`firstPendingIndexes`), each with the annotation and label
  `batch.kubernetes.io/job-completion-index`, the hostname `<job>-<index>`, generateName
  `<job>-<index>-` (`podGenerateNameWithIndex`) and the env JOB_COMPLETION_INDEX from that
  annotation (`addCompletionIndexEnvVariables`); it completes when every index has a succeeded
  pod (`status.completedIndexes`, as ranges "0-3,5").
  Enough successes make SuccessCriteriaMet, reason CompletionsReached, `Reached expected
  number of succeeded pods` (`newSuccessCondition`, JobSuccessPolicy beta and on);
  suspend and resume set the Suspended condition (JobSuspended / JobResumed);
- `trackJobStatusAndRemoveFinalizers`: ended pods go into uncountedTerminatedPods, the
  status is written, their finalizers are removed, then they are counted in
  succeeded / failed; the interim condition (FailureTarget, SuccessCriteriaMet) is
  written first, and the terminal one (Failed, Complete, same reason and message) only
  when no pod is uncounted or terminating (`enactJobFinished`); Complete sets
  completionTime. Events: SuccessfulCreate `Created pod: <pod>`, SuccessfulDelete
  `Deleted pod: <pod>` (controller_utils.go `RealPodControl`), Completed `Job
  completed`, or the failure's reason and message (`recordJobFinished`);
- `syncOrphanPod`: a pod whose Job is gone or finished loses its tracking finalizer.

The Job's selector and template labels come from the API server (tests.kube.resources
`prepare_job`, as `generateSelector` does). Status writes are PUTs of the whole status
(`UpdateStatus`); `ready` counts pods with condition Ready=True, which the stand-in
kubelet does not write, so it stays 0.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from tests.standins.events import Recorder
from tests.standins.training_operator import now

API_VERSION, KIND = "batch/v1", "Job"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
CONTROLLER_NAME = "kubernetes.io/job-controller"
POD_FAILURE_BACKOFF = 10.0
"""`DefaultJobPodFailureBackOff` (job_controller.go), seconds"""
MAX_POD_FAILURE_BACKOFF = 600.0
"""`MaxJobPodFailureBackOff`"""
BACKOFF_LIMIT_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
COMPLETIONS_MESSAGE = "Reached expected number of succeeded pods"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""`batch.JobCompletionIndexAnnotation` (and the label, PodIndexLabel being GA)"""

Obj = dict[str, Any]


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def _is_true(status: Obj, type_: str) -> bool:
    condition = _condition(status, type_)
    return condition is not None and condition["status"] == "True"


def is_finished(job: Obj) -> bool:
    """`util.IsJobFinished`: Complete or Failed is True."""
    status = job.get("status") or {}
    return _is_true(status, "Complete") or _is_true(status, "Failed")


def new_condition(type_: str, reason: str = "", message: str = "", value: str = "True") -> Obj:
    """`newCondition`: lastProbeTime and lastTransitionTime both now; empty reason or message omitted."""
    stamp = now()
    condition: Obj = {"type": type_, "status": value, "lastProbeTime": stamp, "lastTransitionTime": stamp}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def ensure_condition(status: Obj, type_: str, value: str, reason: str, message: str) -> bool:
    """`ensureJobConditionStatus`: replace a condition that differs; never add a False one."""
    conditions = status.setdefault("conditions", [])
    current = _condition(status, type_)
    if current is not None:
        if (current["status"], current.get("reason", ""), current.get("message", "")) == (
            value,
            reason,
            message,
        ):
            return False
        conditions[conditions.index(current)] = new_condition(type_, reason, message, value)
        return True
    if value != "False":
        conditions.append(new_condition(type_, reason, message, value))
        return True
    return False


def _has_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def _deleting(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def only_replace_failed_pods(job: Obj) -> bool:
    """`onlyReplaceFailedPods`: podReplacementPolicy Failed, or a podFailurePolicy."""
    spec = job["spec"]
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: Obj, job: Obj) -> bool:
    """`isPodFailed`: Failed, or (unless only failed pods are replaced) deleted before it succeeded."""
    if _phase(pod) == "Failed":
        return True
    if only_replace_failed_pods(job):
        return False
    return _deleting(pod) and _phase(pod) != "Succeeded"


def is_active(pod: Obj) -> bool:
    """`controller.FilterActivePods`: not Succeeded, not Failed, not being deleted."""
    return _phase(pod) not in ("Succeeded", "Failed") and not _deleting(pod)


def is_terminating(pod: Obj) -> bool:
    """`controller.IsPodTerminating`: being deleted and not yet in a terminal phase."""
    return _deleting(pod) and _phase(pod) not in ("Succeeded", "Failed")


def is_ready(pod: Obj) -> bool:
    """`podutil.IsPodReady`: the Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def finished_time(pod: Obj) -> datetime:
    """`getFinishedTime` (backoff_utils.go): the last container's finishedAt when all ended, else
    the Ready=False transition, else deletionTimestamp - grace, else creationTimestamp."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    finished = [((s.get("state") or {}).get("terminated") or {}).get("finishedAt") for s in statuses]
    if statuses and all(finished):
        return max(_time(stamp) for stamp in finished if stamp)
    for condition in (pod.get("status") or {}).get("conditions") or []:
        ready_false = condition.get("type") == "Ready" and condition.get("status") == "False"
        if ready_false and condition.get("lastTransitionTime"):
            return _time(condition["lastTransitionTime"])
    meta = pod["metadata"]
    if meta.get("deletionTimestamp"):
        return _time(meta["deletionTimestamp"]) - timedelta(
            seconds=meta.get("deletionGracePeriodSeconds") or 0
        )
    return _time(meta["creationTimestamp"])


@dataclass
class BackoffRecord:
    """`backoffRecord`: failures since the last success, and when the last one ended."""

    failures_after_last_success: int = 0
    last_failure_time: datetime | None = None

    def updated(self, succeeded: list[Obj], failed: list[Obj]) -> BackoffRecord:
        """`newBackoffRecord`."""
        succeeded, failed = sorted(succeeded, key=finished_time), sorted(failed, key=finished_time)
        if not succeeded:
            if not failed:
                return self
            return BackoffRecord(self.failures_after_last_success + len(failed), finished_time(failed[-1]))
        record = BackoffRecord()
        last_success = finished_time(succeeded[-1])
        for pod in reversed(failed):
            failed_at = finished_time(pod)
            if not failed_at > last_success:
                break
            if record.last_failure_time is None:
                record.last_failure_time = failed_at
            record.failures_after_last_success += 1
        return record

    def remaining(self, default: float, maximum: float) -> float:
        """`getRemainingTimeForFailuresCount`: default x 2^(failures-1), capped, less the time since."""
        if self.failures_after_last_success == 0 or self.last_failure_time is None:
            return 0.0
        backoff = default
        for _ in range(1, self.failures_after_last_success):
            backoff *= 2
            if backoff >= maximum:
                backoff = maximum
                break
        elapsed = (datetime.now(UTC) - self.last_failure_time).total_seconds()
        return 0.0 if backoff < elapsed else backoff - elapsed


def controller_ref(job: Obj) -> Obj:
    """`metav1.NewControllerRef(job, controllerKind)`."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_indexed(job: Obj) -> bool:
    return bool(job["spec"].get("completionMode") == "Indexed")


def completion_index(pod: Obj) -> int | None:
    """`getCompletionIndex`: the pod's index annotation, None when absent or not a number."""
    raw = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def index_ranges(indexes: set[int]) -> str:
    """`succeededIndexes.String()`: "0-2,4" (intervals of consecutive indexes)."""
    out, ordered = [], sorted(indexes)
    start = previous = None
    for index in ordered:
        if start is None:
            start = previous = index
        elif index == previous + 1:
            previous = index
        else:
            out.append(f"{start}-{previous}" if start != previous else str(start))
            start = previous = index
    if start is not None:
        out.append(f"{start}-{previous}" if start != previous else str(start))
    return ",".join(out)


def parse_ranges(text: str) -> set[int]:
    indexes: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return indexes


def pod_from_template(job: Obj, index: int | None = None) -> Obj:
    """`GetPodFromTemplate` (controller_utils.go) with the tracking finalizer that `manageJob` adds
    to the template (`appendJobCompletionFinalizerIfNotFound`); for an Indexed Job's `index`, its
    annotation and label, hostname, env and generateName (`manageJob`, indexed_job_utils.go)."""
    template = copy.deepcopy(job["spec"]["template"])
    template_meta = template.get("metadata") or {}
    finalizers = list(template_meta.get("finalizers") or [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    meta: Obj = {"generateName": f"{job['metadata']['name']}-", "finalizers": finalizers}
    if template_meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    if template_meta.get("annotations"):
        meta["annotations"] = dict(template_meta["annotations"])
    meta["ownerReferences"] = [controller_ref(job)]
    spec = template.get("spec") or {}
    if index is not None:
        meta["generateName"] = f"{job['metadata']['name']}-{index}-"
        meta.setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
        meta.setdefault("labels", {})[COMPLETION_INDEX] = str(index)
        spec["hostname"] = f"{job['metadata']['name']}-{index}"
        env_var = {
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        }
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in container.get("env") or []):
                container.setdefault("env", []).append(env_var)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _controller_of(obj: Obj) -> Obj | None:
    return next((o for o in obj["metadata"].get("ownerReferences") or [] if o.get("controller")), None)


@dataclass
class JobController:
    """Syncs every batch/v1 Job once per `step`, through the API server like the real controller."""

    api_client: Any
    pod_failure_backoff: float = POD_FAILURE_BACKOFF
    """Seconds before the first replacement of a failed pod (upstream: 10; tests shorten it)"""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(job, reason, message) of every event the real controller would record"""

    def __post_init__(self) -> None:
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self._backoff: dict[str, BackoffRecord] = {}
        self.recorder = Recorder(self.api_client, "job-controller")

    def step(self) -> None:
        jobs = json.loads(self.batch.list_job_for_all_namespaces(_preload_content=False).data)["items"]
        pods = json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        for job in jobs:
            if is_finished(job):
                self._backoff.pop(job["metadata"]["uid"], None)  # removeBackoffRecord
                continue
            if (job["spec"].get("managedBy") or CONTROLLER_NAME) != CONTROLLER_NAME:
                continue
            owned = [
                p
                for p in pods
                if p["metadata"]["namespace"] == job["metadata"]["namespace"]
                and (_controller_of(p) or {}).get("uid") == job["metadata"]["uid"]
            ]
            self.sync(job, owned)
        self._orphans(jobs, pods)

    # ------------------------------------------------------------------------------- syncJob

    def sync(self, job: Obj, pods: list[Obj]) -> None:
        spec, uid = job["spec"], job["metadata"]["uid"]
        status = copy.deepcopy(job.get("status") or {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        uncounted_succeeded = set(uncounted.get("succeeded") or [])
        uncounted_failed = set(uncounted.get("failed") or [])
        active_pods = [p for p in pods if is_active(p)]
        terminating = sum(1 for p in pods if is_terminating(p))
        ready = sum(1 for p in active_pods if is_ready(p))

        def new(uncounted_set: set[str], ended: Any) -> list[Obj]:
            return [
                p
                for p in pods
                if _has_finalizer(p) and p["metadata"]["uid"] not in uncounted_set and ended(p)
            ]

        new_succeeded = new(uncounted_succeeded, lambda p: _phase(p) == "Succeeded")
        succeeded_indexes = parse_ranges(status.get("completedIndexes", "")) | {
            index for p in pods if _phase(p) == "Succeeded" and (index := completion_index(p)) is not None
        }
        new_failed = new(uncounted_failed, lambda p: is_pod_failed(p, job))
        succeeded = status.get("succeeded", 0) + len(new_succeeded) + len(uncounted_succeeded)
        failed = status.get("failed", 0) + len(new_failed) + len(uncounted_failed)
        suspended = bool(spec.get("suspend"))
        if not status.get("startTime") and not suspended:
            status["startTime"] = now()
        backoff = self._backoff.get(uid, BackoffRecord()).updated(new_succeeded, new_failed)

        finished = _condition(status, "SuccessCriteriaMet")
        if finished is not None and finished["status"] != "True":
            finished = None
        if finished is None and _is_true(status, "FailureTarget"):
            target = _condition(status, "FailureTarget") or {}
            finished = new_condition("Failed", target.get("reason", ""), target.get("message", ""))
        if finished is None:
            if failed > int(spec.get("backoffLimit", 6)) or self._past_backoff_on_failure(job, pods):
                finished = new_condition("FailureTarget", "BackoffLimitExceeded", BACKOFF_LIMIT_MESSAGE)
            elif self._past_active_deadline(job, status):
                finished = new_condition("FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE)

        active = len(active_pods)
        if finished is not None:
            deleted = self._delete_pods(job, active_pods, remove_finalizer=False)
            active -= deleted
            terminating += deleted
        else:
            if not job["metadata"].get("deletionTimestamp"):
                active, removed = self._manage(
                    job, active_pods, succeeded, terminating, backoff, succeeded_indexes
                )
                terminating += removed
            completions = spec.get("completions")
            done = len(succeeded_indexes) if is_indexed(job) else succeeded
            complete = (
                succeeded > 0 and active == 0
                if completions is None
                else done >= int(completions) and active == 0
            )
            if complete:
                finished = new_condition("SuccessCriteriaMet", "CompletionsReached", COMPLETIONS_MESSAGE)
            elif not job["metadata"].get("deletionTimestamp"):
                self._suspension(job, status, suspended)

        status["active"] = active
        status["ready"] = ready
        status["terminating"] = terminating
        if is_indexed(job):
            status["completedIndexes"] = index_ranges(succeeded_indexes)
        self._track(job, status, pods, finished, backoff)

    def _past_backoff_on_failure(self, job: Obj, pods: list[Obj]) -> bool:
        """`pastBackoffLimitOnFailure`: restarts of running or pending pods, under OnFailure only."""
        template_spec = job["spec"]["template"].get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = sum(
            int(s.get("restartCount", 0))
            for p in pods
            if _phase(p) in ("Running", "Pending")
            for key in ("initContainerStatuses", "containerStatuses")
            for s in (p.get("status") or {}).get(key) or []
        )
        limit = int(job["spec"].get("backoffLimit", 6))
        return restarts > 0 if limit == 0 else restarts >= limit

    @staticmethod
    def _past_active_deadline(job: Obj, status: Obj) -> bool:
        """`pastActiveDeadline`: activeDeadlineSeconds since startTime, unless suspended."""
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is None or not status.get("startTime") or job["spec"].get("suspend"):
            return False
        return (datetime.now(UTC) - _time(status["startTime"])).total_seconds() >= int(deadline)

    def _manage(
        self,
        job: Obj,
        active_pods: list[Obj],
        succeeded: int,
        terminating: int,
        backoff: BackoffRecord,
        succeeded_indexes: set[int],
    ) -> tuple[int, int]:
        """`manageJob`: the number of active pods after deleting or creating some, and of deleted ones."""
        spec = job["spec"]
        active = len(active_pods)
        if spec.get("suspend"):
            removed = self._delete_pods(job, active_pods, remove_finalizer=True)
            return active - removed, removed
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        done = len(succeeded_indexes) if is_indexed(job) else succeeded
        if completions is None:
            want = active if succeeded > 0 else parallelism
        else:
            want = max(0, min(int(completions) - done, parallelism))
        if active > want:
            removed = self._delete_pods(job, active_pods[: active - want], remove_finalizer=True)
            return active - removed, removed
        replacing = terminating if only_replace_failed_pods(job) else 0
        diff = want - replacing - active
        if diff <= 0:
            return active, 0
        if backoff.remaining(self.pod_failure_backoff, MAX_POD_FAILURE_BACKOFF) > 0:
            return 0, 0  # upstream answers 0 active while it waits out the back-off
        namespace = job["metadata"]["namespace"]
        indexes: list[int | None] = [None] * diff
        if is_indexed(job):  # firstPendingIndexes
            taken = succeeded_indexes | {completion_index(p) for p in active_pods}
            pending = [i for i in range(int(completions or parallelism)) if i not in taken]
            indexes = list(pending[:diff])
            diff = len(indexes)
        for created_so_far, index in enumerate(indexes):
            try:
                response = self.core.create_namespaced_pod(
                    namespace, pod_from_template(job, index), _preload_content=False
                )
            except client.ApiException as error:
                if error.status not in (400, 403, 422):
                    raise
                # `RealPodControl.createPods` (pkg/controller/controller_utils.go): a Warning
                # FailedCreate event, and the sync ends with the error (retried with back-off).
                message = f"Error creating: {json.loads(error.body or '{}').get('message') or error.reason}"
                self._event(job, "FailedCreate", message)
                self.recorder.event(
                    {"apiVersion": API_VERSION, "kind": KIND, **job}, "Warning", "FailedCreate", message
                )
                return active + created_so_far, 0
            created = json.loads(response.data)
            self._event(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return active + diff, 0

    def _suspension(self, job: Obj, status: Obj, suspended: bool) -> None:
        """The Suspended condition, and a new startTime on resume."""
        if suspended:
            if ensure_condition(status, "Suspended", "True", "JobSuspended", "Job suspended"):
                self._event(job, "Suspended", "Job suspended")
        elif ensure_condition(status, "Suspended", "False", "JobResumed", "Job resumed"):
            self._event(job, "Resumed", "Job resumed")
            status["startTime"] = now()

    def _delete_pods(self, job: Obj, pods: list[Obj], remove_finalizer: bool) -> int:
        """`deleteActivePods` (finalizers kept) or `deleteJobPods` (finalizer removed first)."""
        deleted = 0
        for pod in pods:
            meta = pod["metadata"]
            if remove_finalizer:
                self._remove_finalizer(pod)
            try:
                self.core.delete_namespaced_pod(meta["name"], meta["namespace"])
            except client.ApiException as error:
                if error.status != 404:
                    raise
            else:
                self._event(job, "SuccessfulDelete", f"Deleted pod: {meta['name']}")
            deleted += 1
        return deleted

    # --------------------------------------------------------- trackJobStatusAndRemoveFinalizers

    def _track(
        self, job: Obj, status: Obj, pods: list[Obj], finished: Obj | None, backoff: BackoffRecord
    ) -> None:
        spec, uid = job["spec"], job["metadata"]["uid"]
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        with_finalizer = {p["metadata"]["uid"] for p in pods if _has_finalizer(p)}
        self._count_uncounted(status, with_finalizer)
        uncounted_succeeded = list(uncounted.get("succeeded") or [])
        uncounted_failed = list(uncounted.get("failed") or [])
        to_remove = []
        job_deleting = bool(job["metadata"].get("deletionTimestamp"))
        for pod in pods:
            if not _has_finalizer(pod):
                continue
            pod_uid, failed = pod["metadata"]["uid"], is_pod_failed(pod, job)
            if not (job_deleting or finished is not None or _phase(pod) == "Succeeded" or failed):
                continue  # canRemoveFinalizer
            to_remove.append(pod)
            if _phase(pod) == "Succeeded" and pod_uid not in uncounted_failed:
                if pod_uid not in uncounted_succeeded:
                    uncounted_succeeded.append(pod_uid)
            elif failed or (finished is not None and finished["type"] != "SuccessCriteriaMet"):
                # When the job is considered finished, every non-terminated pod is considered failed.
                uncounted_failed += [] if pod_uid in uncounted_failed else [pod_uid]
        _set_uncounted(status, uncounted_succeeded, uncounted_failed)
        if finished is not None and finished["type"] == "FailureTarget":
            status.setdefault("conditions", []).append(finished)
            finished = new_condition("Failed", finished.get("reason", ""), finished.get("message", ""))
        if finished is not None and finished["type"] == "SuccessCriteriaMet":
            if _condition(status, "SuccessCriteriaMet") is None:
                status.setdefault("conditions", []).append(finished)
            finished = new_condition("Complete", finished.get("reason", ""), finished.get("message", ""))
        # flushUncountedAndRemoveFinalizers: the status with the uncounted pods, then the finalizers.
        job = self._update_status(job, status)
        if job is None:
            return
        self._backoff[uid] = backoff  # updateBackoffRecord, once the status is flushed
        for pod in to_remove:
            self._remove_finalizer(pod)
            with_finalizer.discard(pod["metadata"]["uid"])
        self._count_uncounted(status, with_finalizer)
        # enactJobFinished
        left = status.get("uncountedTerminatedPods") or {}
        if (
            finished is not None
            and not (left.get("succeeded") or left.get("failed"))
            and not status["terminating"]
        ):
            ensure_condition(
                status, finished["type"], "True", finished.get("reason", ""), finished.get("message", "")
            )
            if finished["type"] == "Complete":
                status["completionTime"] = (_condition(status, "Complete") or {})["lastTransitionTime"]
            if self._update_status(job, status) is not None:
                if finished["type"] == "Complete":
                    if (
                        spec.get("completions") is not None
                        and status.get("succeeded", 0) > spec["completions"]
                    ):
                        self._event(
                            job,
                            "TooManySucceededPods",
                            "Too many succeeded pods running after completion count reached",
                        )
                    self._event(job, "Completed", "Job completed")
                else:
                    self._event(job, finished.get("reason", ""), finished.get("message", ""))
            return
        self._update_status(job, status)

    @staticmethod
    def _count_uncounted(status: Obj, with_finalizer: set[str]) -> None:
        """`cleanUncountedPodsWithoutFinalizers`: uncounted pods whose finalizer is gone are counted."""
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        lists = {}
        for key in ("succeeded", "failed"):
            listed = list(uncounted.get(key) or [])
            kept = [pod_uid for pod_uid in listed if pod_uid in with_finalizer]
            if len(kept) != len(listed):
                status[key] = status.get(key, 0) + len(listed) - len(kept)
            lists[key] = kept
        _set_uncounted(status, lists["succeeded"], lists["failed"])

    def _update_status(self, job: Obj, status: Obj) -> Obj | None:
        """`updateJobStatus`: the whole status, if the Job is unchanged since it was read (else None:
        the next step syncs again). A JSON patch (`test` the resourceVersion, `replace` the status)
        does what UpdateStatus does; the client's replace would re-encode the timestamps."""
        written = _wire(status)
        if written == (job.get("status") or {}):
            return job
        meta = job["metadata"]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "add", "path": "/status", "value": written},
        ]
        try:
            response = self.batch.patch_namespaced_job_status(
                meta["name"],
                meta["namespace"],
                patch,
                _content_type="application/json-patch+json",
                _preload_content=False,
            )
        except client.ApiException as error:
            if error.status in (404, 409, 422):  # gone, or a failed `test`: changed since it was read
                return None
            raise
        updated: Obj = json.loads(response.data)
        return updated

    def _remove_finalizer(self, pod: Obj) -> None:
        """`removeTrackingFinalizerPatch`."""
        meta = pod["metadata"]
        # The strategic merge `$deleteFromPrimitiveList` leaves no empty list: a merge patch does it here.
        finalizers = [f for f in meta.get("finalizers") or [] if f != TRACKING_FINALIZER] or None
        try:
            self.core.patch_namespaced_pod(
                meta["name"],
                meta["namespace"],
                {"metadata": {"finalizers": finalizers}},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    # ----------------------------------------------------------------------------- orphans

    def _orphans(self, jobs: list[Obj], pods: list[Obj]) -> None:
        """`syncOrphanPod`: the tracking finalizer off pods whose Job is gone or finished."""
        by_uid = {job["metadata"]["uid"]: job for job in jobs}
        for pod in pods:
            if not _has_finalizer(pod):
                continue
            owner = _controller_of(pod)
            if owner is not None:
                if owner.get("kind") != KIND or owner.get("apiVersion") != API_VERSION:
                    continue
                job = by_uid.get(owner.get("uid", ""))
                if job is not None:
                    if (job["spec"].get("managedBy") or CONTROLLER_NAME) != CONTROLLER_NAME:
                        continue
                    if not is_finished(job):
                        continue
            self._remove_finalizer(pod)

    def _event(self, job: Obj, reason: str, message: str) -> None:
        self.events.append((job["metadata"]["name"], reason, message))


def _set_uncounted(status: Obj, succeeded: list[str], failed: list[str]) -> None:
    uncounted: Obj = {}
    if succeeded:
        uncounted["succeeded"] = succeeded
    if failed:
        uncounted["failed"] = failed
    status["uncountedTerminatedPods"] = uncounted


def _wire(status: Obj) -> Obj:
    """The status as the API serves it: zero counters and empty fields omitted (`omitempty`),
    except ready and terminating, which are pointers and always written."""
    written = {k: v for k, v in status.items() if v not in (None, [], "")}
    for counter in ("active", "succeeded", "failed"):
        if not written.get(counter):
            written.pop(counter, None)
    return written
