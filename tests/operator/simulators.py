"""Stand-ins for the Spark operator and the Kubeflow training operator.

They move SparkApplication and PyTorchJob status the way the real controllers
do (application states SUBMITTED -> RUNNING -> COMPLETED | FAILED; job
conditions Created -> Running -> Succeeded | Failed) and, for a PyTorchJob,
create the master pod and write the trainer's termination message into its
status. What each child does is decided by a `Workload`: scripted outcomes for
the operator's tests, or really executing the emitted command (end to end).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from lth import manifests

SPARK = manifests.CHILD_RESOURCES["SparkApplication"]
PYTORCH = manifests.CHILD_RESOURCES["PyTorchJob"]


@dataclass(frozen=True)
class Finished:
    """How a child ended: success (with the master's termination message), or failure."""

    succeeded: bool
    message: str = ""
    termination_message: str | None = None
    exit_code: int | None = None
    """The master container's exit code: 0 on success, 1 on failure unless given."""


Workload = Callable[[str, dict[str, Any]], Finished | None]
"""(kind, object) -> how it ends; None while it still runs."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, reason: str, message: str = "") -> dict[str, Any]:
    now = _now()
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


@dataclass
class ChildControllers:
    """Polls the cluster and moves each child one step per tick, in a background thread."""

    api_client: Any
    workload: Workload
    tick: float = 0.2
    steps: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, name, state) in the order they happened"""

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="child-controllers", daemon=True)

    def __enter__(self) -> ChildControllers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step_all()
            except client.ApiException as error:
                if error.status not in (404, 409):
                    raise
            time.sleep(self.tick)

    def step_all(self) -> None:
        for app in self.custom.list_cluster_custom_object(*SPARK)["items"]:
            self._step_spark(app)
        for job in self.custom.list_cluster_custom_object(*PYTORCH)["items"]:
            self._step_pytorch(job)

    def _patch_status(
        self, resource: tuple[str, str, str], obj: dict[str, Any], status: dict[str, Any]
    ) -> None:
        meta = obj["metadata"]
        group, version, plural = resource
        self.custom.patch_namespaced_custom_object_status(
            group, version, meta["namespace"], plural, meta["name"], {"status": status}
        )
        self.steps.append(
            (obj["kind"], meta["name"], str(status.get("applicationState", status.get("conditions"))))
        )

    def _step_spark(self, app: dict[str, Any]) -> None:
        if app["metadata"].get("deletionTimestamp"):
            return
        state = ((app.get("status") or {}).get("applicationState") or {}).get("state", "")
        if state == "":
            self._spark_state(app, "SUBMITTED")
        elif state == "SUBMITTED":
            self._spark_state(app, "RUNNING")
        elif state == "RUNNING":
            finished = self.workload("SparkApplication", app)
            if finished is not None:
                self._spark_state(app, "COMPLETED" if finished.succeeded else "FAILED", finished.message)

    def _spark_state(self, app: dict[str, Any], state: str, error: str = "") -> None:
        name = app["metadata"]["name"]
        status: dict[str, Any] = {
            "applicationState": {"state": state},
            "driverInfo": {"podName": f"{name}-driver"},
            "lastSubmissionAttemptTime": _now(),
        }
        if error:
            status["applicationState"]["errorMessage"] = error
        if state in ("COMPLETED", "FAILED"):
            status["terminationTime"] = _now()
        self._patch_status(SPARK, app, status)
        self.steps[-1] = ("SparkApplication", app["metadata"]["name"], state)

    def _step_pytorch(self, job: dict[str, Any]) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        types = {
            c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c["status"] == "True"
        }
        name = job["metadata"]["name"]
        if not types:
            self._job_conditions(
                job, [_condition("Created", "PyTorchJobCreated", f"PyTorchJob {name} is created.")]
            )
        elif types == {"Created"}:
            self._master_pod(job, None)
            self._job_conditions(
                job,
                [
                    _condition("Created", "PyTorchJobCreated"),
                    _condition("Running", "PyTorchJobRunning", f"PyTorchJob {name} is running."),
                ],
            )
        elif "Running" in types:
            finished = self.workload("PyTorchJob", job)
            if finished is None:
                return
            self._master_pod(job, finished)
            running = {**_condition("Running", "PyTorchJobRunning"), "status": "False"}
            final = (
                _condition(
                    "Succeeded", "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed."
                )
                if finished.succeeded
                else _condition(
                    "Failed", "PyTorchJobFailed", finished.message or f"PyTorchJob {name} is failed."
                )
            )
            self._job_conditions(job, [_condition("Created", "PyTorchJobCreated"), running, final])

    def _job_conditions(self, job: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
        status = {"conditions": conditions, "replicaStatuses": {"Master": {}}, "startTime": _now()}
        self._patch_status(PYTORCH, job, status)
        final = [c["type"] for c in conditions if c["status"] == "True"][-1]
        self.steps[-1] = ("PyTorchJob", job["metadata"]["name"], final)

    def _master_pod(self, job: dict[str, Any], finished: Finished | None) -> None:
        """The master replica's pod: running, then terminated with the trainer's message."""
        meta = job["metadata"]
        name = manifests.master_pod_name(meta["name"])
        if finished is None:
            state: dict[str, Any] = {"running": {"startedAt": _now()}}
            phase = "Running"
        else:
            code = finished.exit_code if finished.exit_code is not None else (0 if finished.succeeded else 1)
            terminated: dict[str, Any] = {"exitCode": code, "finishedAt": _now()}
            if finished.termination_message is not None:
                terminated["message"] = finished.termination_message
            state = {"terminated": terminated}
            phase = "Succeeded" if finished.succeeded else "Failed"
        container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        status = {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": manifests.TRAINER_CONTAINER,
                    "image": container["image"],
                    "imageID": "",
                    "ready": finished is None,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        owner = {
            "apiVersion": job["apiVersion"],
            "kind": "PyTorchJob",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "ownerReferences": [owner]},
            "spec": job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"],
        }
        if finished is None:
            try:
                self.core.create_namespaced_pod(meta["namespace"], pod)
            except client.ApiException as error:
                if error.status != 409:
                    raise
        self.core.patch_namespaced_pod_status(name, meta["namespace"], {"status": status})
