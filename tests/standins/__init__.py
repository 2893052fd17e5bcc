"""Stand-ins for what a real cluster runs beside our operator, written from upstream's source.

`Cluster` runs, in one background thread, the Kubeflow training operator's PyTorchJob
controller (`training_operator`), Kubeflow Trainer v2's TrainJob controller and webhooks
(`trainer_v2`) and JobSet's (`jobset`), the Spark operator's SparkApplication controller and
pod webhook (`spark_operator`), kube-controller-manager's batch/v1 Job controller
(`job_controller`), optionally Kueue (`kueue`), and the scheduler and kubelet of a
one-node cluster (`kubelet`) against the emulated API server, whose creates go through
the admission plugins a locked-down cluster has: Pod Security (`pod_security`, by the
namespace's labels), ResourceQuota (`resource_quota`, by the namespace's quotas) and
Kueue's webhooks. The controllers only create pods and read their status,
as the real ones do; what a container does is the runtime's: real processes under the
pod's uid (`processes.ProcessRuntime`), or a `Workload` that decides how each child's
main container ends (`ScriptedRuntime`, for the operator's tests). While it runs, the
emulator of this process serves `pods/log` from the kubelet's container logs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.kube import emulator
from tests.standins import (
    job_controller,
    jobset,
    pod_security,
    resource_quota,
    spark_operator,
    trainer_v2,
    training_operator,
)
from tests.standins.images import Image, catalog
from tests.standins.job_controller import JobController
from tests.standins.jobset import JobSetController
from tests.standins.kubelet import Exit, Kubelet, Launch, Runtime
from tests.standins.kueue import Kueue
from tests.standins.processes import ProcessRuntime
from tests.standins.spark_operator import SparkOperator
from tests.standins.trainer_v2 import TrainerV2
from tests.standins.training_operator import TrainingOperator

__all__ = ["Cluster", "Finished", "ProcessRuntime", "ScriptedRuntime", "Workload"]


@dataclass(frozen=True)
class Finished:
    """How a child's main container ends: success (with the trainer's termination message) or failure."""

    succeeded: bool
    reason: str = ""
    """The container's terminated reason (Error, OOMKilled); Completed on success"""
    termination_message: str | None = None
    exit_code: int | None = None
    """0 on success; 1 on failure unless given (137 with OOMKilled)"""


Workload = Callable[[str, dict[str, Any]], Finished | None]
"""(kind, child object) -> how its main container ends; None while it still runs.

The kinds: "PyTorchJob" (the master pod's `pytorch` container), "TrainJob" (the `node`
container of node 0's pod), "SparkApplication" (the driver's container) and "Job" (a batch/v1
Job's pod's first container, unless the Job is a TrainJob's); the object is the PyTorchJob,
TrainJob, SparkApplication or Job as the API server has it now."""

NodeWorkload = Callable[[dict[str, Any], int], Finished | None]
"""(TrainJob, node index > 0) -> how that node's `node` container ends; None: as node 0's did
when it succeeded, else it runs until its pod is deleted."""

WorkloadLog = Callable[[str, dict[str, Any]], str | None]
"""(kind, child object) -> what the main container has written so far (None: nothing new)."""


@dataclass
class ScriptedRuntime:
    """Containers that run no process: the main container of a PyTorchJob's master pod, of a
    Spark driver or of a batch/v1 Job's pod ends as the workload says, and has written what
    `log` says (the kubelet's log file, which `kubectl logs` reads); init containers end at
    once, successfully; other containers (workers) run until their pod is deleted."""

    api_client: Any
    workload: Workload
    log: WorkloadLog | None = None
    node: NodeWorkload | None = None
    started: set[tuple[str, str]] = field(default_factory=set)
    succeeded: set[str] = field(default_factory=set)
    """uids of TrainJobs whose node 0 succeeded: their other nodes end successfully too"""

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def start(self, launch: Launch) -> None:
        self.started.add(launch.key)

    def _child(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The kind and object whose workload this container runs, if it is a main container."""
        labels = pod["metadata"].get("labels") or {}
        namespace = pod["metadata"]["namespace"]
        owner = next((o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")), {})
        try:
            if jobset.JOBSET_NAME in labels and container["name"] == trainer_v2.NODE:
                name = labels[jobset.JOBSET_NAME]
                trainjob = self.custom.get_namespaced_custom_object(
                    trainer_v2.TRAINER, trainer_v2.TRAINER_VERSION, namespace, "trainjobs", name
                )
                index = labels.get(job_controller.COMPLETION_INDEX, "0")
                return ("TrainJob" if index == "0" else f"TrainJob node {index}"), trainjob
            if (
                labels.get(training_operator.LABEL_ROLE) == "master"
                and container["name"] == training_operator.CONTAINER
            ):
                api, name = training_operator, labels[training_operator.LABEL_JOB]
                return "PyTorchJob", self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name
                )
            if labels.get("spark-role") == "driver":
                api, name = spark_operator, labels[spark_operator.LABEL_APP_NAME]
                return "SparkApplication", self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name
                )
            if (owner.get("apiVersion"), owner.get("kind")) == (
                job_controller.API_VERSION,
                job_controller.KIND,
            ):
                if container["name"] != pod["spec"]["containers"][0]["name"]:
                    return None
                job = self.batch.read_namespaced_job(owner["name"], namespace, _preload_content=False)
                return "Job", json.loads(job.data)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return None

    def poll(self, launch: Launch) -> Exit | None:
        pod, container = launch.pod, launch.container
        if container["name"] in {c["name"] for c in pod["spec"].get("initContainers") or []}:
            return Exit(0)
        found = self._child(pod, container)
        if found is None:
            return None
        kind, child = found
        if kind.startswith("TrainJob node "):
            node = self.node(child, int(kind.rpartition(" ")[2])) if self.node is not None else None
            if node is None and child["metadata"]["uid"] not in self.succeeded:
                return None
            return self._exit(node or Finished(True))
        if self.log is not None and (text := self.log(kind, child)) is not None:
            launch.log_file.write_text(text)
        finished = self.workload(kind, child)
        if finished is not None and finished.succeeded and kind == "TrainJob":
            self.succeeded.add(child["metadata"]["uid"])
        if finished is None:
            return None
        return self._exit(finished)

    @staticmethod
    def _exit(finished: Finished) -> Exit:
        if finished.succeeded:
            return Exit(0, "Completed", finished.termination_message or "")
        code = (
            finished.exit_code
            if finished.exit_code is not None
            else (137 if finished.reason == "OOMKilled" else 1)
        )
        return Exit(code, finished.reason or "Error", finished.termination_message or "")

    def kill_pod(self, pod_uid: str) -> None:
        self.started = {key for key in self.started if key[0] != pod_uid}

    def set_services(self, services: dict[str, list[str]]) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Cluster:
    """The stand-in controllers and node, stepping in a background thread while in use."""

    api_client: Any
    runtime: Runtime
    exports: dict[str, Path] = field(default_factory=dict)
    images: dict[str, Image] | None = None
    gpus: int = 0
    spark_webhook: bool = True
    fixed_3419: bool = False
    job_backoff: float = job_controller.POD_FAILURE_BACKOFF
    """Seconds before the Job controller replaces a failed pod (upstream: 10)"""
    tick: float = 0.2
    work: Path | None = None
    kueue: tuple[str, ...] | None = None
    """Kueue's `integrations.frameworks` (kueue.FRAMEWORKS_V0_19 as installed); None: no Kueue"""
    manage_jobs_without_queue_name: bool = False

    def __post_init__(self) -> None:
        self.work = self.work or Path(tempfile.mkdtemp(prefix="lth-kubelet-"))
        # The images' command folders are this node's when it made them: removed with it.
        self._own_images = self.images is None
        self.images = catalog() if self.images is None else self.images
        self.work.chmod(0o755)
        self.training = TrainingOperator(self.api_client, fixed_3419=self.fixed_3419)
        self.trainer = TrainerV2(self.api_client)
        self.jobsets = JobSetController(self.api_client)
        self.spark = SparkOperator(self.api_client, webhook=self.spark_webhook)
        self.jobs = JobController(self.api_client, pod_failure_backoff=self.job_backoff)
        self.kubelet = Kubelet(
            self.api_client,
            self.runtime,
            self.images,
            self.exports,
            self.work,
            gpus=self.gpus,
        )
        self.core = client.CoreV1Api(self.api_client)
        self.queues = (
            None
            if self.kueue is None
            else Kueue(self.api_client, self.kueue, self.manage_jobs_without_queue_name)
        )
        self._server: emulator.ApiServer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stand-ins", daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> Cluster:
        # The emulator of this process that the client talks to reads pods/log from this node.
        self._server = emulator.serving(self.api_client.configuration.host)
        if self._server is not None:
            self._server.container_logs = self.kubelet.log
            self._server.validating += [pod_security.admit, resource_quota.admit]
            self.trainer.install(self._server)
            self.jobsets.install(self._server)
            if self.queues is not None:
                self.queues.install(self._server, self._server.register)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._server is not None and self._server.container_logs == self.kubelet.log:
            self._server.container_logs = None
            self._server.mutating.clear()
            self._server.validating.clear()
        self.runtime.stop()
        assert self.work is not None
        shutil.rmtree(self.work, ignore_errors=True)  # the kubelet's logs and termination files
        if self._own_images:
            for folder in {image.path.parent for image in (self.images or {}).values()}:
                shutil.rmtree(folder, ignore_errors=True)
        if self.errors:
            raise self.errors[0]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except client.ApiException as error:
                if error.status not in (404, 409):
                    self.errors.append(error)
            except Exception as error:  # a stand-in bug must fail the test, not hang it
                traceback.print_exc()
                self.errors.append(error)
                return
            time.sleep(self.tick)

    def step(self) -> None:
        if self.queues is not None:
            self.queues.step()
        self.training.step()
        self.trainer.step()
        self.jobsets.step()
        self.spark.step()
        self.jobs.step()
        self.kubelet.step()

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return json.loads(self.core.read_namespaced_pod(name, namespace, _preload_content=False).data)  # type: ignore[no-any-return]

    def events(self) -> list[tuple[str, str, str]]:
        """Every event the stand-ins would have posted: (object, reason, message)."""
        return [
            *self.training.events,
            *self.trainer.events,
            *self.jobsets.events,
            *self.spark.events,
            *self.jobs.events,
            *self.kubelet.events,
        ]
