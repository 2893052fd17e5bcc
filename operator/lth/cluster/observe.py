"""The run's children and its ticket's source as the operator reads them from the API server (and
the volume, where it mounts it): what the planner is given, never a memory of what was done."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import kubernetes
from pydantic import ValidationError

from lth import api
from lth.api import workload
from lth.api.naming import export_name, prep_name
from lth.api.observed import ChildKind, ObservedChild, ObservedSource
from lth.api.validation import SubmittedSpec
from lth.api.workload import RunPaths
from lth.cluster import export_job, objects, pytorchjob, spark_application
from lth.cluster.pods import pod_selector, stuck_pods, with_pod_failure
from lth.storage import files
from lth.storage.tickets import observe_directory

SPARK = objects.CHILD_RESOURCES["SparkApplication"]
PYTORCH = objects.CHILD_RESOURCES["PyTorchJob"]
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
    """The run's SparkApplication, PyTorchJobs and export Job as the planner sees them: a
    finished child with its master's or driver's termination message, an unfinished one with
    what holds its pods (one pod list each: none for a finished, deleted or suspended child),
    and with `read_progress` a running level's latest epoch (one log read each)."""
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
        children[app.name] = _with_stuck_pods(core, namespace, "SparkApplication", app)
    jobs = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(*PYTORCH[:2], namespace, PYTORCH[2], label_selector=selector),
    )
    for obj in jobs["items"]:
        child = pytorchjob.observe_pytorch_job(obj)
        if child.state == "Succeeded":
            level, branch = _level_of(obj)
            result = None
            pod = _master_pod(core, namespace, obj)
            if pod is not None:
                result = pytorchjob.level_result_from_pod(pod, level, branch)
            if result is None and STORAGE_ROOT:
                layout = RunPaths(STORAGE_ROOT, run).layout
                result = files.read_result(layout.result_file(level, branch))
            child = pytorchjob.observe_pytorch_job(obj, result)
        elif child.state == "Failed":
            pod = _master_pod(core, namespace, obj)
            if pod is not None:
                child = with_pod_failure(child, pod)
        elif child.state == "Running" and read_progress and not child.deleting:
            level, branch = _level_of(obj)
            tail = _log_tail(core, namespace, pytorchjob.master_pod_name(child.name))
            child = replace(child, progress=workload.latest_epoch(tail, level, branch))
        children[child.name] = _with_stuck_pods(core, namespace, "PyTorchJob", child)
    export = _observe_export(core, namespace, run)
    if export is not None:
        children[export.name] = _with_stuck_pods(core, namespace, "Job", export)
    return children


def _observe_export(core: kubernetes.client.CoreV1Api, namespace: str, run: str) -> ObservedChild | None:
    """The export Job, with its pod's termination message when it failed; None when absent."""
    try:
        response = batch_client().read_namespaced_job(export_name(run), namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    job = export_job.observe_job(json.loads(response.data))  # type: ignore[attr-defined]
    if job.state != "Failed":
        return job
    listed = core.list_namespaced_pod(
        namespace, label_selector=pod_selector("Job", job.name), _preload_content=False
    )
    for pod in json.loads(listed.data)["items"]:  # type: ignore[attr-defined]
        if (pod.get("status") or {}).get("phase") == "Failed":
            return with_pod_failure(job, pod, export_job.EXPORT_CONTAINER)
    return job


def _log_tail(core: kubernetes.client.CoreV1Api, namespace: str, pod: str) -> str:
    """The trainer container's last lines; empty while it cannot be read (not started, gone)."""
    try:
        tail: str = core.read_namespaced_pod_log(
            pod, namespace, container=objects.TRAINER_CONTAINER, tail_lines=workload.PROGRESS_TAIL_LINES
        )
        return tail
    except kubernetes.client.ApiException as error:
        if error.status in (400, 404):
            return ""
        raise


def _with_stuck_pods(
    core: kubernetes.client.CoreV1Api, namespace: str, kind: ChildKind, child: ObservedChild
) -> ObservedChild:
    """An unfinished child with the first reason its pods cannot run (`pods.stuck_pods`)."""
    if child.state not in ("Pending", "Running") or child.deleting or child.stuck is not None:
        return child
    response = core.list_namespaced_pod(
        namespace, label_selector=pod_selector(kind, child.name), _preload_content=False
    )
    pods = cast(list[dict[str, Any]], json.loads(response.data)["items"])  # type: ignore[attr-defined]
    return replace(child, stuck=stuck_pods(pods))


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


def _level_of(job: dict[str, Any]) -> tuple[int, Any]:
    labels = job["metadata"].get("labels") or {}
    return int(labels.get(objects.LABEL_LEVEL, "0")), labels.get(objects.LABEL_BRANCH, "main")


def _master_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, job: dict[str, Any]
) -> dict[str, Any] | None:
    return _read_pod(core, namespace, pytorchjob.master_pod_name(job["metadata"]["name"]))


def _read_pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """A pod as JSON (not the client's model: only its container states matter); None if gone."""
    try:
        response = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], json.loads(response.data))  # type: ignore[attr-defined]
