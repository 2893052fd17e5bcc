"""The batch/v1 Job `<run>-export` that writes (and uploads) the ticket and report, and what is
read back from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lth.api import RunSpec, RunStatus
from lth.api.defaults import WorkloadDefaults
from lth.api.naming import export_name
from lth.api.observed import ChildState, ObservedChild, Stuck
from lth.api.workload import (
    TERMINATION_LOG,
    RunPaths,
)
from lth.cluster.children.objects import (
    LABEL_RUN,
    RunRef,
    as_mapping,
    attempt_of,
    child_metadata,
    container_security,
    escape_expansion,
    is_deleting,
    pod_security,
    queue_labels,
    storage_mount,
    storage_volume,
    tracking_env,
    true_condition,
)

JOB_API_VERSION = "batch/v1"


# --------------------------------------------------------------------------- export Job

EXPORT_CONTAINER = "export"
STATUS_ENV = "LTH_STATUS"
"""The run's status, as JSON, in the export Job's environment: the pod never reads the API."""


def export_job(
    run: RunRef,
    spec: RunSpec,
    paths: RunPaths,
    attempt: int,
    status: RunStatus,
    defaults: WorkloadDefaults | None = None,
) -> dict[str, Any]:
    """The Job `<run>-export` that writes runs/<name>/ticket/ with `lth report`, as `lth run`
    does locally, and uploads it to spec.export.url; the trainer image, no GPU, the run's volume.

    backoffLimit 0: a retry is the planner's (spec.retry.export), a new Job at the next attempt.
    """
    defaults = defaults or WorkloadDefaults()
    command = [
        "lth",
        "report",
        paths.run_dir,
        "--status-env",
        STATUS_ENV,
        "--termination-log",
        TERMINATION_LOG,
    ]
    export = spec.export
    if export.url:
        command += ["--upload", export.url]
        if export.endpoint_url:
            command += ["--endpoint-url", export.endpoint_url]
    # A pod's environment is readable by whoever may read the Job: the public form.
    status_json = json.dumps(status.to_public_wire(), separators=(",", ":"))
    container: dict[str, Any] = {
        "name": EXPORT_CONTAINER,
        "image": spec.resources.image or defaults.trainer_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": [escape_expansion(a) for a in command],
        "env": [
            {"name": STATUS_ENV, "value": escape_expansion(status_json)},
            # matplotlib's cache: the image's home belongs to its own uid, not always the pod's.
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            *tracking_env(spec),
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [storage_mount(spec)],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    if export.secret_name:
        container["envFrom"] = [{"secretRef": {"name": export.secret_name}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [storage_volume(spec)],
        "securityContext": pod_security(spec, defaults),
        "automountServiceAccountToken": False,
    }
    if defaults.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in defaults.image_pull_secrets]
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": child_metadata(run, export_name(run.name), attempt, queue_labels(spec)),
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {LABEL_RUN: run.name, **queue_labels(spec)}},
                "spec": pod_spec,
            },
        },
    }


def observe_job(obj: Mapping[str, Any]) -> ObservedChild:
    """A batch/v1 Job as the planner sees it: Complete or Failed True end it (the Job
    controller's terminal conditions, pkg/controller/job/job_controller.go)."""
    failed = true_condition(obj, "Failed")
    state: ChildState
    message = ""
    if failed is not None:
        state = "Failed"
        message = str(failed.get("message") or failed.get("reason") or "")
    elif true_condition(obj, "Complete") is not None:
        state = "Succeeded"
    elif int(as_mapping(obj.get("status")).get("active") or 0) > 0:
        state = "Running"
    else:
        state = "Pending"
    name = str(obj["metadata"]["name"])
    suspended = state == "Pending" and as_mapping(obj.get("spec")).get("suspend") is True
    return ObservedChild(
        name=name,
        attempt=attempt_of(obj),
        state=state,
        message=message,
        deleting=is_deleting(obj),
        # Kueue suspends a Job it manages until it admits it (its webhook sets spec.suspend).
        stuck=Stuck("WaitingForQueue", f"Job {name}", "suspended until Kueue admits it")
        if suspended
        else None,
    )
