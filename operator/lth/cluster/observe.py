"""The run's children and its ticket's source as the operator reads them from the API server (and
the volume, where it mounts it): what the planner is given, never a memory of what was done."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kubernetes
from pydantic import ValidationError

from lth import api
from lth.api import workload
from lth.api.defaults import from_environment
from lth.api.naming import export_name, prep_name
from lth.api.observed import ChildKind, ObservedChild, ObservedNamespace, ObservedSource, Stuck
from lth.api.validation import SubmittedSpec
from lth.api.workload import RunPaths
from lth.cluster import admission, queues
from lth.cluster.children import export_job, objects, spark_application
from lth.cluster.children.level_api import LevelJobApi
from lth.cluster.children.level_jobs import LEVEL_JOB_APIS, level_job_api
from lth.cluster.pods import pod_selector, refused_pods, stuck_pods, with_pod_failure
from lth.storage import files
from lth.storage.tickets import observe_directory

SPARK = objects.CHILD_RESOURCES["SparkApplication"]
WORKLOAD_DEFAULTS = from_environment()
"""The chart's `workloads` values: images, pull secrets, GPU placement, uid and gid, pod templates."""
STORAGE_ROOT = os.environ.get("LTH_STORAGE_ROOT")
"""Where the operator mounts the runs' volume (what pods see at spec.storage.mountPath), if it
does: result.json is read there when a master pod's termination message is gone, and an
exported ticket (spec.ticket.path) is checked there before any child is created."""


def api_clients() -> tuple[kubernetes.client.CustomObjectsApi, kubernetes.client.CoreV1Api]:
    """Clients over one shared connection pool (urllib3's pool is thread-safe)."""
    global _client
    if _client is None:
        _client = kubernetes.client.ApiClient()
    return kubernetes.client.CustomObjectsApi(_client), kubernetes.client.CoreV1Api(_client)


def batch_client() -> kubernetes.client.BatchV1Api:
    api_clients()
    return kubernetes.client.BatchV1Api(_client)


_client: kubernetes.client.ApiClient | None = None


def observe_children(
    custom: kubernetes.client.CustomObjectsApi,
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    run: str,
    read_progress: bool = False,
) -> dict[str, ObservedChild]:
    """The run's SparkApplication, level jobs (PyTorchJobs, TrainJobs) and export Job as the
    planner sees them: a finished child with its lead pod's or driver's termination message, an
    unfinished one with what holds its pods (one pod list each: none for a finished, deleted or
    suspended child), and with `read_progress` a running level's latest epoch (one log read each)."""
    selector = f"{objects.LABEL_RUN}={run}"
    children: dict[str, ObservedChild] = {}
    apps = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], label_selector=selector),
    )
    for obj in apps["items"]:
        if obj["metadata"]["name"] != prep_name(run):
            continue
        app = spark_application.observe_spark_application(obj)
        if app.state == "Failed":
            pod = _read_pod(core, namespace, spark_application.spark_driver_pod_name(obj))
            if pod is not None:
                app = with_pod_failure(app, pod, spark_application.SPARK_DRIVER_CONTAINER)
        children[app.name] = _with_stuck(custom, core, namespace, "SparkApplication", obj, app)
    for level_api in LEVEL_JOB_APIS.values():
        for obj in _level_jobs(custom, namespace, level_api, selector):
            child = _observe_level_job(core, namespace, run, level_api, obj, read_progress)
            children[child.name] = _with_stuck(custom, core, namespace, level_api.kind, obj, child)
    export = _observe_export(custom, core, namespace, run)
    if export is not None:
        children[export.name] = export
    return children


def _level_jobs(
    custom: kubernetes.client.CustomObjectsApi, namespace: str, level_api: LevelJobApi, selector: str
) -> list[dict[str, Any]]:
    """The run's jobs of one training API; none where the cluster does not serve it."""
    group, version, plural = level_api.resource
    try:
        listed = custom.list_namespaced_custom_object(
            group, version, namespace, plural, label_selector=selector
        )
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return []
        raise
    return list(cast(dict[str, Any], listed)["items"])


def _observe_level_job(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    run: str,
    level_api: LevelJobApi,
    obj: dict[str, Any],
    read_progress: bool,
) -> ObservedChild:
    """A level's job (or one of the instability analysis') with its result (the lead pod's
    termination message, else result.json), its failed pod's own words, or its latest epoch."""
    child = level_api.observe(obj, None)
    stability = _stability_of(obj)
    if child.state == "Succeeded" and stability is not None:
        pod = _lead_pod(core, namespace, level_api, child.name)
        return level_api.observe(obj, _stability_result(run, pod, level_api.container, *stability))
    if child.state == "Succeeded":
        level, branch = _level_of(obj)
        pod = _lead_pod(core, namespace, level_api, child.name)
        result = (
            None if pod is None else objects.level_result_from_pod(pod, level_api.container, level, branch)
        )
        if result is None and STORAGE_ROOT:
            result = files.read_result(RunPaths(STORAGE_ROOT, run).layout.result_file(level, branch))
        return level_api.observe(obj, result)
    if child.state == "Failed":
        pod = _failed_pod(core, namespace, level_api, child.name)
        return child if pod is None else with_pod_failure(child, pod, level_api.container)
    if child.state == "Running" and read_progress and not child.deleting and stability is None:
        level, branch = _level_of(obj)
        name = level_api.lead_pod_name(child.name) if level_api.lead_pod_name else None
        if name is None:
            pod = _lead_pod(core, namespace, level_api, child.name)
            name = None if pod is None else str(pod["metadata"]["name"])
        tail = "" if name is None else _log_tail(core, namespace, name, level_api.container)
        return replace(child, progress=workload.latest_epoch(tail, level, branch))
    return child


def _lead_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, level_api: LevelJobApi, job: str
) -> dict[str, Any] | None:
    """The pod whose termination message carries the level's result (the newest, if the job's
    controller made more than one); None when it is gone."""
    if level_api.lead_pod_name is not None:
        return _read_pod(core, namespace, level_api.lead_pod_name(job))
    listed = core.list_namespaced_pod(
        namespace, label_selector=level_api.lead_pod_selector(job), _preload_content=False
    )
    pods = cast(list[dict[str, Any]], json.loads(listed.data)["items"])  # type: ignore[attr-defined]
    pods.sort(key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))
    return pods[-1] if pods else None


def _failed_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, level_api: LevelJobApi, job: str
) -> dict[str, Any] | None:
    """The failed pod that says why the job failed: the lead pod where it failed, else the pod
    that failed first (the others of a distributed job often fail only because it did), by
    when its containers ended, then by name; None when none is left."""
    lead = _lead_pod(core, namespace, level_api, job)
    if lead is not None and (lead.get("status") or {}).get("phase") == "Failed":
        return lead
    listed = core.list_namespaced_pod(
        namespace, label_selector=pod_selector(level_api.kind, job), _preload_content=False
    )
    pods = cast(list[dict[str, Any]], json.loads(listed.data)["items"])  # type: ignore[attr-defined]
    failed = sorted(
        (pod for pod in pods if (pod.get("status") or {}).get("phase") == "Failed"),
        key=lambda pod: (_ended_at(pod), str(pod["metadata"]["name"])),
    )
    return failed[0] if failed else lead


def _ended_at(pod: Mapping[str, Any]) -> datetime:
    """When the pod's first container to end ended (its terminated finishedAt)."""
    ends = [
        objects.parse_time(((status.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    return min((end for end in ends if end is not None), default=datetime.max.replace(tzinfo=UTC))


def _observe_export(
    custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api, namespace: str, run: str
) -> ObservedChild | None:
    """The export Job, with its pod's termination message when it failed, or what holds it;
    None when absent."""
    try:
        response = batch_client().read_namespaced_job(export_name(run), namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    obj = json.loads(response.data)  # type: ignore[attr-defined]
    job = export_job.observe_job(obj)
    if job.state != "Failed":
        return _with_stuck(custom, core, namespace, "Job", obj, job)
    listed = core.list_namespaced_pod(
        namespace, label_selector=pod_selector("Job", job.name), _preload_content=False
    )
    for pod in json.loads(listed.data)["items"]:  # type: ignore[attr-defined]
        if (pod.get("status") or {}).get("phase") == "Failed":
            return with_pod_failure(job, pod, export_job.EXPORT_CONTAINER)
    return job


def _log_tail(core: kubernetes.client.CoreV1Api, namespace: str, pod: str, container: str) -> str:
    """The trainer container's last lines; empty while it cannot be read (not started, gone)."""
    try:
        tail: str = core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=workload.PROGRESS_TAIL_LINES
        )
        return tail
    except kubernetes.client.ApiException as error:
        if error.status in (400, 404):
            return ""
        raise


def _with_stuck(
    custom: kubernetes.client.CustomObjectsApi,
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    kind: ChildKind,
    obj: dict[str, Any],
    child: ObservedChild,
) -> ObservedChild:
    """An unfinished child with the first reason it or its pods cannot run: why Kueue holds a
    suspended one; else what holds its pods (`pods.stuck_pods`), or, when fewer pods exist than
    it has, the pod create its controller had refused (its events)."""
    if child.state not in ("Pending", "Running") or child.deleting:
        return child
    if child.stuck is not None and child.stuck.reason == "WaitingForQueue":
        return replace(child, stuck=_queue_stuck(custom, namespace, kind, obj, child))
    response = core.list_namespaced_pod(
        namespace, label_selector=pod_selector(kind, child.name), _preload_content=False
    )
    pods = cast(list[dict[str, Any]], json.loads(response.data)["items"])  # type: ignore[attr-defined]
    stuck = stuck_pods(pods)
    if stuck is None and len(pods) < _pods_of(kind, obj):
        stuck = _why_no_pods(core, namespace, kind, obj, child.name)
    return replace(child, stuck=stuck)


def _why_no_pods(
    core: kubernetes.client.CoreV1Api, namespace: str, kind: ChildKind, obj: dict[str, Any], name: str
) -> Stuck | None:
    """Why a child has fewer pods than it runs: its own events (a TrainJob Trainer could not
    reconcile), else the pod create its pods' controller had refused (FailedCreate events)."""
    level_api = level_job_api(kind)
    controller: tuple[str, str, str | None] = (kind, name, str(obj["metadata"].get("uid", "")))
    if level_api is not None:
        if level_api.stuck_from_events is not None:
            stuck = level_api.stuck_from_events(obj, _events_about(core, namespace, name))
            if stuck is not None:
                return stuck
        controller = level_api.pod_controller(obj)
    controller_kind, controller_name, uid = controller
    since = None if uid else objects.parse_time(obj["metadata"].get("creationTimestamp"))
    events = _events_about(core, namespace, controller_name)
    return refused_pods(kind, name, events, controller_kind, uid=uid, since=since)


def _events_about(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
    )
    return cast(list[dict[str, Any]], json.loads(listed.data)["items"])  # type: ignore[attr-defined]


def _pods_of(kind: ChildKind, obj: Mapping[str, Any]) -> int:
    """How many pods a child has when it runs (its driver is the SparkApplication's own: its
    refusal shows in the app's errorMessage)."""
    level_api = level_job_api(kind)
    if level_api is not None:
        return level_api.pods_of(obj)
    if kind == "Job":
        return int((obj.get("spec") or {}).get("parallelism", 1))
    return 0


def _queue_stuck(
    custom: kubernetes.client.CustomObjectsApi,
    namespace: str,
    kind: ChildKind,
    obj: dict[str, Any],
    child: ObservedChild,
) -> Stuck:
    """Why Kueue holds a suspended child, from its Workloads (the job-uid label)."""
    queue = queues.queue_of(obj)
    workloads: list[dict[str, Any]] | None = None
    for version in queues.WORKLOAD_VERSIONS:
        try:
            listed = cast(
                dict[str, Any],
                custom.list_namespaced_custom_object(
                    queues.GROUP,
                    version,
                    namespace,
                    "workloads",
                    label_selector=f"{queues.JOB_UID_LABEL}={obj['metadata'].get('uid', '')}",
                ),
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                continue
            if error.status == 403:  # the operator may not read Workloads: say what it knows
                assert child.stuck is not None
                return child.stuck
            raise
        workloads = list(listed["items"])
        break
    stamp = obj["metadata"].get("creationTimestamp")
    now = datetime.now(UTC)
    age = (now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds() if stamp else 0.0
    return queues.waiting_for_queue(kind, child.name, queue, age, workloads)


def observe_namespace(
    core: kubernetes.client.CoreV1Api, namespace: str, submitted: SubmittedSpec
) -> ObservedNamespace | None:
    """The namespace's Pod Security level and what it will refuse of the run's pods; None when
    it enforces none (privileged), the spec is not one, or the operator may not read it."""
    spec, _ = submitted
    if spec is None:
        return None
    try:
        found = json.loads(core.read_namespace(namespace, _preload_content=False).data)  # type: ignore[attr-defined]
    except kubernetes.client.ApiException as error:
        if error.status in (403, 404):
            return None
        raise
    labels = (found.get("metadata") or {}).get("labels") or {}
    level = labels.get(admission.ENFORCE_LABEL)
    if level not in ("baseline", "restricted"):
        return None
    version = labels.get(admission.ENFORCE_VERSION_LABEL, "latest")
    refusals = admission.pod_security_refusals(spec, level, WORKLOAD_DEFAULTS)
    return ObservedNamespace(namespace, f"{level}:{version}", tuple(refusals))


def observe_source(
    custom: kubernetes.client.CustomObjectsApi,
    namespace: str,
    name: str,
    submitted: SubmittedSpec,
    ticket: api.TicketSpec,
) -> ObservedSource | None:
    """What spec.ticket points at, as the planner judges it; None where the operator cannot look."""
    if ticket.run is not None:
        try:
            source = cast(
                dict[str, Any],
                custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, ticket.run
                ),
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return ObservedSource(found=False)
            raise
        try:
            status = api.RunStatus.model_validate(source.get("status") or {})
        except ValidationError:
            status = None  # a status this operator cannot read is no finished run to build on
        return ObservedSource(found=True, status=status)
    if ticket.path is None or STORAGE_ROOT is None:
        return None  # a URL, or no volume here: the trainer checks the ticket
    spec, _ = submitted
    assert spec is not None, "a ticket to resolve comes from a parsed spec"
    mount_path = spec.storage.mount_path  # where its pods see the volume
    on_volume = posixpath.relpath(RunPaths(mount_path, name).resolve(ticket.path), mount_path)
    if on_volume == ".." or on_volume.startswith("../"):
        return None  # elsewhere in the pods' file system: the trainer checks it
    return observe_directory(Path(STORAGE_ROOT) / on_volume)


def _stability_result(
    run: str, pod: dict[str, Any] | None, container: str, point: int, part: api.StabilityPart
) -> api.StabilityResult | None:
    """A finished job of the instability analysis' result, read as a level's is."""
    result = None if pod is None else objects.stability_result_from_pod(pod, container, point, part)
    if result is None and STORAGE_ROOT:
        result = files.read_stability_result(RunPaths(STORAGE_ROOT, run).layout.stability(point, part).result)
    return result


def _stability_of(job: dict[str, Any]) -> tuple[int, api.StabilityPart] | None:
    """(point, part) of a job of the instability analysis; None for a level's."""
    labels = job["metadata"].get("labels") or {}
    point, part = labels.get(objects.LABEL_STABILITY_POINT), labels.get(objects.LABEL_STABILITY_PART)
    if point is None or part not in api.STABILITY_PARTS:
        return None
    return int(point), part


def _level_of(job: dict[str, Any]) -> tuple[int, Any]:
    labels = job["metadata"].get("labels") or {}
    return int(labels.get(objects.LABEL_LEVEL, "0")), labels.get(objects.LABEL_BRANCH, "main")


def _read_pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """A pod as JSON (not the client's model: only its container states matter); None if gone."""
    try:
        response = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], json.loads(response.data))  # type: ignore[attr-defined]
