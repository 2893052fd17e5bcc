"""The operator: kopf handlers that carry out the planner on a cluster.

Run it with `kopf run --standalone -m lth.kopf_handlers --all-namespaces`
(or `-n NAMESPACE` per namespace). Every event of a LotteryTicketRun or of one
of its children leads to one reconcile of the run: read the run, its children
and, until it is resolved, the source of its ticket (spec.ticket) from the API
server or the volume (never from memory), plan, create or delete the
children the plan asks for (409 and 404 mean already done), post its events,
and write the status when it changed. A lock per run keeps reconciles of one
run in sequence; reconciles of different runs go on in parallel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_never, cast

import kopf
import kubernetes
from pydantic import ValidationError

from lth import api, defaults, files, manifests, progress
from lth.commands import RunPaths
from lth.metrics import OperatorMetrics, serve
from lth.naming import export_name, prep_name
from lth.observed import ChildKind, ObservedChild, ObservedSource
from lth.planner import (
    Action,
    Create,
    CreateExport,
    CreateLevelJob,
    CreatePreprocessing,
    DeleteChild,
    EmitEvent,
    Plan,
    plan,
    ticket_to_resolve,
)
from lth.ticket import observe_directory
from lth.validation import SubmittedSpec, parse_spec

SPARK = manifests.CHILD_RESOURCES["SparkApplication"]
PYTORCH = manifests.CHILD_RESOURCES["PyTorchJob"]
SPARK_SERVICE_ACCOUNT = os.environ.get("LTH_SPARK_SERVICE_ACCOUNT", "lth-spark")
WORKLOAD_DEFAULTS = defaults.from_environment()
"""The chart's `workloads` values: images, pull secrets, GPU placement, uid and gid."""
STORAGE_ROOT = os.environ.get("LTH_STORAGE_ROOT")
"""Where the operator mounts the runs' volume (what pods see at spec.storage.mountPath), if it
does: result.json is read there when a master pod's termination message is gone, and an
exported ticket (spec.ticket.path) is checked there before any child is created."""

METRICS = OperatorMetrics()
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _api() -> tuple[kubernetes.client.CustomObjectsApi, kubernetes.client.CoreV1Api]:
    """Clients over one shared connection pool (urllib3's pool is thread-safe)."""
    global _client
    if _client is None:
        _client = kubernetes.client.ApiClient()
    return kubernetes.client.CustomObjectsApi(_client), kubernetes.client.CoreV1Api(_client)


def _batch() -> kubernetes.client.BatchV1Api:
    _api()
    return kubernetes.client.BatchV1Api(_client)


_client: kubernetes.client.ApiClient | None = None
RESYNC_SECONDS = float(os.environ.get("LTH_RESYNC_SECONDS", "30"))
HANDLER_THREADS = 32
"""Threads for the sync handlers. A reconcile waits on a few API calls; kopf's default pool
(cores + 4: 6 on 2 cores) queued them, and at 200 runs the handoff p95 was 7 s, 0.9 s with 32
(bench/RESULTS.md, scale rehearsal)."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.scanning.disabled = True  # the RBAC grants no watch on CRDs
    settings.execution.max_workers = HANDLER_THREADS
    serve(METRICS, int(os.environ.get("LTH_METRICS_PORT", "8080")))


@kopf.on.startup()
async def heartbeat(**_: Any) -> None:
    """Beats from the operator's own event loop: /healthz fails when the loop hangs."""

    async def beat() -> None:
        while True:
            METRICS.beat()
            await asyncio.sleep(10)

    asyncio.get_running_loop().create_task(beat())


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def run_changed(
    type: str | None,
    name: str,
    namespace: str | None,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    **_: Any,
) -> None:
    """A new run, a spec change, or the operator's start; not the echo of its own status write."""
    echo = type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation")
    if type != "DELETED" and namespace and not echo:
        reconcile(namespace, name)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RESYNC_SECONDS, idle=RESYNC_SECONDS)
def resync(name: str, namespace: str | None, status: Mapping[str, Any], **_: Any) -> None:
    """The safety net of a level-triggered controller (a missed or failed event costs one
    period), and the one pass per period that reads the running levels' progress."""
    export = status.get("export") or {}
    ended = status.get("phase") in api.TERMINAL_PHASES
    if namespace and (not ended or export.get("phase") not in (None, "Succeeded", "Failed")):
        reconcile(namespace, name, read_progress=True)


@kopf.on.event(*SPARK, labels={manifests.LABEL_MANAGED_BY: manifests.MANAGED_BY})
@kopf.on.event(*PYTORCH, labels={manifests.LABEL_MANAGED_BY: manifests.MANAGED_BY})
@kopf.on.event("batch", "v1", "jobs", labels={manifests.LABEL_MANAGED_BY: manifests.MANAGED_BY})
def child_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    run = labels.get(manifests.LABEL_RUN)
    if run and namespace:
        reconcile(namespace, run)


def reconcile(namespace: str, name: str, read_progress: bool = False) -> Plan | None:
    """One level-triggered pass over one run; with `read_progress` (once per resync period),
    the log tail of each running level's master pod too."""
    with _locks[(namespace, name)]:
        custom, core = _api()
        try:
            body = cast(
                dict[str, Any],
                custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name),
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                METRICS.run_deleted(namespace, name)
                return None
            raise
        old_status = api.RunStatus.model_validate(body["status"]) if body.get("status") else None
        children = observe_children(custom, core, namespace, name, read_progress)
        submitted = parse_spec(body.get("spec"))  # once per reconcile
        ticket = ticket_to_resolve(submitted, old_status)
        result = plan(
            name,
            body["metadata"].get("generation", 1),
            submitted,
            old_status,
            children,
            datetime.now(UTC),
            source=None if ticket is None else observe_source(custom, namespace, name, submitted, ticket),
        )
        for action in result.actions:
            _apply(custom, body, result, action)
        new_status = result.status.to_wire()
        if new_status != body.get("status"):
            patch = merge_patch(body.get("status") or {}, new_status)
            custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": patch}
            )
        _record_metrics(namespace, name, old_status, result.status)
        METRICS.run_progress(namespace, name, result.status)
        return result


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from `old` to `new`: a field the new status leaves out
    (a level's progress once it ended, say) is sent as null, or the merge would keep it."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def _record_metrics(namespace: str, name: str, old: api.RunStatus | None, new: api.RunStatus) -> None:
    METRICS.run_phase(namespace, name, new.phase)
    before = {(e.level, e.branch): e for e in old.levels} if old else {}
    for entry in new.levels:
        previous = before.get((entry.level, entry.branch))
        if entry.phase == "Succeeded" and (previous is None or previous.phase != "Succeeded"):
            METRICS.level_finished(entry.branch, entry.duration_seconds or 0.0)
        if entry.attempts > (previous.attempts if previous else 1) or (
            entry.phase == "Failed" and (previous is None or previous.phase != "Failed")
        ):
            METRICS.child_failed("PyTorchJob")
    prep, was = new.preprocessing, old.preprocessing if old else None
    if prep is not None and (
        prep.attempts > (was.attempts if was else 1)
        or (prep.phase == "Failed" and (was is None or was.phase != "Failed"))
    ):
        METRICS.child_failed("SparkApplication")


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
    selector = f"{manifests.LABEL_RUN}={run}"
    children: dict[str, ObservedChild] = {}
    apps = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], label_selector=selector),
    )
    for obj in apps["items"]:
        if obj["metadata"]["name"] != prep_name(run):
            continue
        app = manifests.observe_spark_application(obj)
        if app.state == "Failed":
            pod = _read_pod(core, namespace, manifests.spark_driver_pod_name(obj))
            if pod is not None:
                app = manifests.with_pod_failure(app, pod, manifests.SPARK_DRIVER_CONTAINER)
        children[app.name] = _with_stuck_pods(core, namespace, "SparkApplication", app)
    jobs = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(*PYTORCH[:2], namespace, PYTORCH[2], label_selector=selector),
    )
    for obj in jobs["items"]:
        child = manifests.observe_pytorch_job(obj)
        if child.state == "Succeeded":
            level, branch = _level_of(obj)
            result = None
            pod = _master_pod(core, namespace, obj)
            if pod is not None:
                result = manifests.level_result_from_pod(pod, level, branch)
            if result is None and STORAGE_ROOT:
                layout = RunPaths(STORAGE_ROOT, run).layout
                result = files.read_result(layout.result_file(level, branch))
            child = manifests.observe_pytorch_job(obj, result)
        elif child.state == "Failed":
            pod = _master_pod(core, namespace, obj)
            if pod is not None:
                child = manifests.with_pod_failure(child, pod)
        elif child.state == "Running" and read_progress and not child.deleting:
            level, branch = _level_of(obj)
            tail = _log_tail(core, namespace, manifests.master_pod_name(child.name))
            child = replace(child, progress=progress.latest(tail, level, branch))
        children[child.name] = _with_stuck_pods(core, namespace, "PyTorchJob", child)
    export = _observe_export(core, namespace, run)
    if export is not None:
        children[export.name] = _with_stuck_pods(core, namespace, "Job", export)
    return children


def _observe_export(core: kubernetes.client.CoreV1Api, namespace: str, run: str) -> ObservedChild | None:
    """The export Job, with its pod's termination message when it failed; None when absent."""
    try:
        response = _batch().read_namespaced_job(export_name(run), namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    job = manifests.observe_job(json.loads(response.data))  # type: ignore[attr-defined]
    if job.state != "Failed":
        return job
    listed = core.list_namespaced_pod(
        namespace, label_selector=manifests.pod_selector("Job", job.name), _preload_content=False
    )
    for pod in json.loads(listed.data)["items"]:  # type: ignore[attr-defined]
        if (pod.get("status") or {}).get("phase") == "Failed":
            return manifests.with_pod_failure(job, pod, manifests.EXPORT_CONTAINER)
    return job


def _log_tail(core: kubernetes.client.CoreV1Api, namespace: str, pod: str) -> str:
    """The trainer container's last lines; empty while it cannot be read (not started, gone)."""
    try:
        tail: str = core.read_namespaced_pod_log(
            pod, namespace, container=manifests.TRAINER_CONTAINER, tail_lines=progress.TAIL_LINES
        )
        return tail
    except kubernetes.client.ApiException as error:
        if error.status in (400, 404):
            return ""
        raise


def _with_stuck_pods(
    core: kubernetes.client.CoreV1Api, namespace: str, kind: ChildKind, child: ObservedChild
) -> ObservedChild:
    """An unfinished child with the first reason its pods cannot run (`manifests.stuck_pods`)."""
    if child.state not in ("Pending", "Running") or child.deleting or child.stuck is not None:
        return child
    response = core.list_namespaced_pod(
        namespace, label_selector=manifests.pod_selector(kind, child.name), _preload_content=False
    )
    pods = cast(list[dict[str, Any]], json.loads(response.data)["items"])  # type: ignore[attr-defined]
    return replace(child, stuck=manifests.stuck_pods(pods))


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
    return int(labels.get(manifests.LABEL_LEVEL, "0")), labels.get(manifests.LABEL_BRANCH, "main")


def _master_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, job: dict[str, Any]
) -> dict[str, Any] | None:
    return _read_pod(core, namespace, manifests.master_pod_name(job["metadata"]["name"]))


def _read_pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """A pod as JSON (not the client's model: only its container states matter); None if gone."""
    try:
        response = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], json.loads(response.data))  # type: ignore[attr-defined]


def _apply(
    custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any], result: Plan, action: Action
) -> None:
    namespace = body["metadata"]["namespace"]
    match action:
        case EmitEvent():
            kopf.event(
                cast(kopf.Body, body), type=action.type, reason=action.reason, message=action.message[:1024]
            )
        case DeleteChild():
            try:
                if action.kind == "Job":
                    _batch().delete_namespaced_job(action.name, namespace, propagation_policy="Background")
                else:
                    group, version, plural = SPARK if action.kind == "SparkApplication" else PYTORCH
                    custom.delete_namespaced_custom_object(
                        group, version, namespace, plural, action.name, propagation_policy="Background"
                    )
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise
        case CreatePreprocessing() | CreateLevelJob() | CreateExport():
            _create(custom, body, result, action)
        case _:
            assert_never(action)


def _create(
    custom: kubernetes.client.CustomObjectsApi,
    body: dict[str, Any],
    result: Plan,
    action: Create,
) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    spec = result.spec
    assert spec is not None, "the planner creates children of an accepted spec only"
    paths = RunPaths(spec.storage.mount_path, name)
    run = manifests.RunRef(name=name, namespace=namespace, uid=body["metadata"]["uid"])
    if isinstance(action, CreateExport):
        job = manifests.export_job(run, spec, paths, action.attempt, result.status, WORKLOAD_DEFAULTS)
        try:
            _batch().create_namespaced_job(namespace, job)  # type: ignore[arg-type]
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                raise
        return
    if isinstance(action, CreatePreprocessing):
        group, version, plural = SPARK
        manifest = manifests.spark_application(
            run, spec, paths, action.attempt, SPARK_SERVICE_ACCOUNT, WORKLOAD_DEFAULTS
        )
    else:
        group, version, plural = PYTORCH
        manifest = manifests.pytorch_job(
            run,
            spec,
            paths,
            action.level,
            action.branch,
            action.attempt,
            result.status.ticket,
            WORKLOAD_DEFAULTS,
        )
    try:
        custom.create_namespaced_custom_object(group, version, namespace, plural, manifest)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
