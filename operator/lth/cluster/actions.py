"""Carrying out a plan's actions on the cluster: events posted, children created and deleted.

A create the API server refuses (a 4xx other than 409: a quota, an admission webhook, Pod
Security on a pod we create, an invalid object, a kind no operator serves) is not retried
blindly: `carry_out` plans again with the refused child observed as `Refused` (its message
the server's), so the planner says it in the status and an event, retries a quota or a missing
API at the next resync, and fails the run naming the child for the rest. 409 (it exists) and
404 on a delete (it is gone) mean already done; 5xx and lost connections are raised, and kopf
retries the whole reconcile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, assert_never, cast

import kopf
import kubernetes

from lth.api.observed import ChildKind, ObservedChild, Stuck
from lth.api.workload import RunPaths, chosen_rewind
from lth.cluster.children import export_job, objects, spark_application
from lth.cluster.children.level_jobs import LEVEL_JOB_APIS, stability_job
from lth.cluster.children.trainjob import RUNTIME_NOT_FOUND, runtime_missing
from lth.cluster.observe import SPARK, WORKLOAD_DEFAULTS, batch_client
from lth.plan import (
    Action,
    Create,
    CreateExport,
    CreateLevelJob,
    CreatePreprocessing,
    CreateStabilityJob,
    DeleteChild,
    EmitEvent,
    Plan,
)

OPERATOR_OF: dict[ChildKind, str] = {
    "SparkApplication": "the Spark operator (kubeflow/spark-operator)",
    **{kind: level_api.served_by for kind, level_api in LEVEL_JOB_APIS.items()},
    "Job": "the batch/v1 API",
}
"""Who serves each child kind, for a create answered 404 (the kind is not served)."""


def carry_out(
    custom: kubernetes.client.CustomObjectsApi,
    body: dict[str, Any],
    plan_with: Callable[[Mapping[str, ObservedChild]], Plan],
    spark_service_account: str,
) -> Plan:
    """Apply the plan's actions in order; on a refused create, plan again with the refusal
    observed and go on with that plan (its actions done already are not done twice)."""
    refused: dict[str, ObservedChild] = {}
    done: list[Action] = []
    while True:
        result = plan_with(refused)
        for action in result.actions:
            if action in done:
                continue
            refusal = apply(custom, body, result, action, spark_service_account)
            if refusal is not None:
                refused[refusal.name] = refusal
                break
            done.append(action)
        else:
            return result


def apply(
    custom: kubernetes.client.CustomObjectsApi,
    body: dict[str, Any],
    result: Plan,
    action: Action,
    spark_service_account: str,
) -> ObservedChild | None:
    """Carry out one action; the refused child when the server refused a create."""
    namespace = body["metadata"]["namespace"]
    match action:
        case EmitEvent():
            kopf.event(
                cast(kopf.Body, body), type=action.type, reason=action.reason, message=action.message[:1024]
            )
        case DeleteChild():
            try:
                if action.kind == "Job":
                    batch_client().delete_namespaced_job(
                        action.name, namespace, propagation_policy="Background"
                    )
                else:
                    # A TrainJob, never only its JobSet: Trainer v2.3.0 recreates a deleted
                    # JobSet of a failed TrainJob and runs it again (kubeflow/trainer #3737).
                    group, version, plural = objects.CHILD_RESOURCES[action.kind]
                    custom.delete_namespaced_custom_object(
                        group, version, namespace, plural, action.name, propagation_policy="Background"
                    )
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise
        case CreatePreprocessing() | CreateLevelJob() | CreateStabilityJob() | CreateExport():
            return _create(custom, body, result, action, spark_service_account)
        case _:
            assert_never(action)
    return None


def _create(
    custom: kubernetes.client.CustomObjectsApi,
    body: dict[str, Any],
    result: Plan,
    action: Create,
    spark_service_account: str,
) -> ObservedChild | None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    spec = result.spec
    assert spec is not None, "the planner creates children of an accepted spec only"
    paths = RunPaths(spec.storage.mount_path, name)
    run = objects.RunRef(name=name, namespace=namespace, uid=body["metadata"]["uid"])
    kind: ChildKind
    try:
        if isinstance(action, CreateExport):
            kind = "Job"
            job = export_job.export_job(run, spec, paths, action.attempt, result.status, WORKLOAD_DEFAULTS)
            batch_client().create_namespaced_job(namespace, job)  # type: ignore[arg-type]
            return None
        if isinstance(action, CreatePreprocessing):
            kind, (group, version, plural) = "SparkApplication", SPARK
            manifest = spark_application.spark_application(
                run, spec, paths, action.attempt, spark_service_account, WORKLOAD_DEFAULTS
            )
        else:
            level_api = LEVEL_JOB_APIS[spec.resources.level_kind]
            kind, (group, version, plural) = level_api.kind, level_api.resource
            if isinstance(action, CreateStabilityJob):
                manifest = stability_job(
                    run, spec, paths, action.point, action.part, action.attempt, WORKLOAD_DEFAULTS
                )
            else:
                manifest = level_api.build(
                    run,
                    spec,
                    paths,
                    action.level,
                    action.branch,
                    action.attempt,
                    result.status.ticket,
                    WORKLOAD_DEFAULTS,
                    chosen_rewind(result.status, action.level),
                )
        custom.create_namespaced_custom_object(group, version, namespace, plural, manifest)
    except kubernetes.client.ApiException as error:
        if error.status == 409:
            return None
        return refusal(kind, action.name, action.attempt, error)
    return None


def refusal(kind: ChildKind, name: str, attempt: int, error: kubernetes.client.ApiException) -> ObservedChild:
    """A refused create as the planner sees it: a quota refusal or an API not served is retried
    (QuotaExceeded, ApiMissing), any other 4xx fails the run; 5xx and others are raised."""
    status = int(error.status or 0)
    if not 400 <= status < 500:
        raise error
    try:
        message = str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        message = str(error.body or error.reason)
    subject = f"{kind} {name}"
    if kind == "TrainJob" and any(text in message for text in RUNTIME_NOT_FOUND):
        detail = runtime_missing(WORKLOAD_DEFAULTS.training_runtime, f"create refused: {message}")
        return ObservedChild(
            name, attempt, "Refused", message, stuck=Stuck("RuntimeMissing", subject, detail)
        )
    if status == 403 and "exceeded quota" in message:
        stuck = Stuck("QuotaExceeded", subject, f"create refused: {message}; retried at the next resync")
        return ObservedChild(name, attempt, "Refused", message, stuck=stuck)
    if status == 404:
        detail = f"the cluster does not serve {kind} ({message}): is {OPERATOR_OF[kind]} installed?"
        return ObservedChild(name, attempt, "Refused", detail, stuck=Stuck("ApiMissing", subject, detail))
    return ObservedChild(name, attempt, "Refused", f"{status} {message}", retryable=False)
