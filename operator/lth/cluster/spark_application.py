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
from lth.cluster.objects import (
    LABEL_RUN,
    STORAGE_VOLUME,
    RunRef,
    as_mapping,
    attempt_of,
    child_metadata,
    container_security,
    is_deleting,
    pod_security,
)

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"

SPARK_DRIVER_CONTAINER = "spark-kubernetes-driver"
"""Spark names the driver's container so; the Spark operator reads its exit code there."""

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
    keep the namespace default, as they need no API access. The pods' uid and gid
    reach them through the Spark operator's pod webhook (on by default); without it
    they run as the image's user, which the project's images set to the default uid.
    """
    defaults = defaults or WorkloadDefaults()
    prep = spec.preprocessing
    side = {
        "labels": {LABEL_RUN: run.name},
        "podSecurityContext": pod_security(spec, defaults),
        "securityContext": container_security(),
    }
    app: dict[str, Any] = {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": child_metadata(run, prep_name(run.name), attempt),
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
    return app


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
    return ObservedChild(
        name=str(obj["metadata"]["name"]),
        attempt=attempt_of(obj),
        state=state,
        message=message,
        deleting=is_deleting(obj),
        retryable=exit_code is None or int(exit_code.group(1)) != EXIT_BAD_INPUT,
    )


def spark_driver_pod_name(obj: Mapping[str, Any]) -> str:
    """The driver pod: status.driverInfo.podName once submitted, else the operator's default name."""
    recorded = as_mapping(as_mapping(obj.get("status")).get("driverInfo")).get("podName")
    return recorded if isinstance(recorded, str) and recorded else f"{obj['metadata']['name']}-driver"
