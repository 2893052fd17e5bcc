"""The SparkApplication `<run>-prep` that preprocesses the data, and what is read back from it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lth.api import RunSpec
from lth.api.defaults import WorkloadDefaults
from lth.api.naming import prep_name
from lth.api.observed import ChildState, ObservedChild
from lth.api.workload import (
    EXIT_BAD_INPUT,
    SPARK_MAIN_IN_IMAGE,
    TERMINATION_LOG,
    RunPaths,
    prep_arguments,
)
from lth.cluster.admission import fixes_for
from lth.cluster.children.objects import (
    LABEL_RUN,
    STORAGE_VOLUME,
    RunRef,
    as_mapping,
    attempt_of,
    child_metadata,
    container_security,
    is_deleting,
    pod_security,
    queue_labels,
)

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"

SPARK_DRIVER_CONTAINER = "spark-kubernetes-driver"
"""Spark names the driver's container so; the Spark operator reads its exit code there."""
SPARK_EXECUTOR_CONTAINER = "spark-kubernetes-executor"
"""The executor container a pod template names (`Spark3DefaultExecutorContainerName`,
spark-operator pkg/common/spark.go, set by `executorPodTemplateOption`)."""
POD_SECURITY_REFUSAL = "violates PodSecurity"
"""In errorMessage when spark-submit's pod create was refused by Pod Security: the same pods
are refused again, so it is not retried."""

SPARK_EXIT_CODE = re.compile(r"driver container failed with ExitCode: (-?[0-9]+)")
"""How the Spark operator words a failed driver in status.applicationState.errorMessage
(`updateDriverState`, internal/controller/sparkapplication/controller.go)."""

SPARK_RUNNING_STATES = frozenset({"RUNNING", "SUCCEEDING", "FAILING", "UNKNOWN"})
"""Spark operator states with a driver up. COMPLETED and FAILED are its only terminal states;
SUBMISSION_FAILED, PENDING_RERUN and the rest lead to one of those, so they count as Pending."""


def _spark_volume_conf(spec: RunSpec) -> dict[str, str]:
    """The storage claim as Spark's own volume settings: spark-submit mounts it in the driver and
    the executors, where `volumes`/`volumeMounts` would need the Spark operator's pod webhook."""
    conf: dict[str, str] = {}
    for role in ("driver", "executor"):
        prefix = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.{STORAGE_VOLUME}"
        conf[f"{prefix}.options.claimName"] = spec.storage.claim_name
        conf[f"{prefix}.mount.path"] = spec.storage.mount_path
        conf[f"{prefix}.mount.readOnly"] = "false"
        if spec.storage.sub_path:
            conf[f"{prefix}.mount.subPath"] = spec.storage.sub_path
    return conf


# --------------------------------------------------------------------------- SparkApplication


def spark_application(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    attempt: int,
    service_account: str,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The SparkApplication `<run>-prep` that writes the shards and the data manifest.

    `service_account` runs the driver (it creates the executor pods); the executors
    keep the namespace default, as they need no API access. The pods' uid, gid and
    security context reach them through pod templates (spark-operator >= v2.1.0, chart
    value workloads.sparkPodTemplates), which pass Pod Security restricted with no webhook,
    and through podSecurityContext/securityContext, which the Spark operator's pod webhook
    applies where it runs; without either they run as the image's user, which the project's
    images set to the default uid. With a Kueue queue the app and its pods carry its label.
    """
    defaults = defaults or WorkloadDefaults()
    prep = spec.preprocessing
    labels = {LABEL_RUN: run.name, **queue_labels(spec)}
    side = {
        "labels": labels,
        "podSecurityContext": pod_security(spec, defaults),
        "securityContext": container_security(),
    }
    app: dict[str, Any] = {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": child_metadata(run, prep_name(run.name), attempt, queue_labels(spec)),
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "sparkVersion": prep.spark_version,
            "image": prep.image or defaults.spark_image,
            "imagePullPolicy": defaults.image_pull_policy,
            "mainApplicationFile": SPARK_MAIN_IN_IMAGE,
            "arguments": prep_arguments(spec, paths, TERMINATION_LOG),
            "restartPolicy": {"type": "Never"},
            "sparkConf": _spark_volume_conf(spec),
            "driver": {
                **side,
                "cores": prep.driver_cores,
                "memory": prep.driver_memory,
                "serviceAccount": service_account,
            },
            "executor": {
                **side,
                "cores": prep.executor_cores,
                "memory": prep.executor_memory,
                "instances": prep.executors,
            },
        },
    }
    if defaults.image_pull_secrets:
        app["spec"]["imagePullSecrets"] = list(defaults.image_pull_secrets)
    if defaults.spark_pod_templates:
        for role, container in (("driver", SPARK_DRIVER_CONTAINER), ("executor", SPARK_EXECUTOR_CONTAINER)):
            app["spec"][role]["template"] = _pod_template(spec, defaults, labels, container)
    return app


def _pod_template(
    spec: RunSpec, defaults: WorkloadDefaults, labels: dict[str, str], container: str
) -> dict[str, Any]:
    """A driver or executor pod template: Spark builds the pod on it, keeping its security
    contexts (`KubernetesUtils.loadPodFromTemplate`), so no webhook is needed for them."""
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "securityContext": pod_security(spec, defaults),
            "containers": [{"name": container, "securityContext": container_security()}],
        },
    }


def observe_spark_application(obj: Mapping[str, Any]) -> ObservedChild:
    """A SparkApplication as the planner sees it."""
    app_state = ((obj.get("status") or {}).get("applicationState")) or {}
    state_name = str(app_state.get("state") or "")
    state: ChildState
    if state_name == "COMPLETED":
        state = "Succeeded"
    elif state_name == "FAILED":
        state = "Failed"
    elif state_name in SPARK_RUNNING_STATES:
        state = "Running"
    else:
        state = "Pending"
    detail = str(app_state.get("errorMessage") or "")
    message = f"{state_name}: {detail}" if detail else ""
    exit_code = SPARK_EXIT_CODE.search(detail)
    refused = POD_SECURITY_REFUSAL in detail
    if refused:
        message += f"; fixes: {fixes_for(detail)}"
    return ObservedChild(
        name=str(obj["metadata"]["name"]),
        attempt=attempt_of(obj),
        state=state,
        message=message,
        deleting=is_deleting(obj),
        retryable=not refused and (exit_code is None or int(exit_code.group(1)) != EXIT_BAD_INPUT),
    )


def spark_driver_pod_name(obj: Mapping[str, Any]) -> str:
    """The driver pod: status.driverInfo.podName once submitted, else the operator's default name."""
    recorded = as_mapping(as_mapping(obj.get("status")).get("driverInfo")).get("podName")
    return recorded if isinstance(recorded, str) and recorded else f"{obj['metadata']['name']}-driver"
