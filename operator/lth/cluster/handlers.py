"""The operator: kopf handlers that carry out the planner on a cluster.

Run it with `kopf run --standalone -m lth.cluster.handlers --all-namespaces`
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
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes

from lth import api
from lth.api import defaults
from lth.api.observed import ObservedChild
from lth.api.validation import parse_spec
from lth.cluster.actions import carry_out
from lth.cluster.children import objects
from lth.cluster.children.level_jobs import LEVEL_JOB_APIS
from lth.cluster.metrics import OperatorMetrics, serve
from lth.cluster.observe import (
    SPARK,
    WORKLOAD_DEFAULTS,
    api_clients,
    observe_children,
    observe_namespace,
    observe_source,
)
from lth.plan import (
    Plan,
    plan,
    ticket_to_resolve,
)

SPARK_SERVICE_ACCOUNT = os.environ.get("LTH_SPARK_SERVICE_ACCOUNT", "lth-spark")

METRICS = OperatorMetrics()
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
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


def child_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    run = labels.get(objects.LABEL_RUN)
    if run and namespace:
        reconcile(namespace, run)


# Every child kind the run may have; a kind the cluster does not serve is not watched (kopf
# warns that it cannot serve it) and a run that asks for it says so (ApiMissing).
for _resource in (
    SPARK,
    *(level_api.resource for level_api in LEVEL_JOB_APIS.values()),
    ("batch", "v1", "jobs"),
):
    kopf.on.event(*_resource, labels={objects.LABEL_MANAGED_BY: objects.MANAGED_BY})(child_changed)


def reconcile(namespace: str, name: str, read_progress: bool = False) -> Plan | None:
    """One level-triggered pass over one run; with `read_progress` (once per resync period),
    the log tail of each running level's master pod too."""
    with _locks[(namespace, name)]:
        custom, core = api_clients()
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
        accepted = old_status.accepted_spec if old_status else None
        submitted = defaults.with_training_api(
            defaults.admitted(parse_spec(body.get("spec")), WORKLOAD_DEFAULTS), accepted, WORKLOAD_DEFAULTS
        )  # parsed once per reconcile
        ticket = ticket_to_resolve(submitted, old_status)
        source = None if ticket is None else observe_source(custom, namespace, name, submitted, ticket)
        ended = old_status is not None and old_status.phase in api.TERMINAL_PHASES
        admission = None if ended else observe_namespace(core, namespace, submitted)
        now = datetime.now(UTC)

        def plan_with(refused: Mapping[str, ObservedChild]) -> Plan:
            observed = {**children, **refused}
            generation = body["metadata"].get("generation", 1)
            return plan(name, generation, submitted, old_status, observed, now, source, admission)

        result = carry_out(custom, body, plan_with, SPARK_SERVICE_ACCOUNT)
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
            METRICS.child_failed(
                new.accepted_spec.resources.level_kind if new.accepted_spec else "PyTorchJob"
            )
    prep, was = new.preprocessing, old.preprocessing if old else None
    if prep is not None and (
        prep.attempts > (was.attempts if was else 1)
        or (prep.phase == "Failed" and (was is None or was.phase != "Failed"))
    ):
        METRICS.child_failed("SparkApplication")
