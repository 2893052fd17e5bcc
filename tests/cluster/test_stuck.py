"""Stuck pods explained: `stuck_pods` reads the first reason a child's pods cannot run.

The pod JSON below is what the API server returns, with the texts upstream writes
(../shared/upstream-behaviour.md §3): the kubelet's waiting reasons and messages
(pkg/kubelet/images/types.go, image_manager.go; kuberuntime_container.go, kubelet_pods.go)
and the scheduler's PodScheduled condition (pkg/scheduler/schedule_one.go).
"""

from __future__ import annotations

from typing import Any

import pytest

from lth.api.observed import Stuck
from lth.cluster.children.objects import LABEL_KUEUE_QUEUE, TRAINER_CONTAINER
from lth.cluster.children.pytorchjob import observe_pytorch_job
from lth.cluster.children.spark_application import SPARK_DRIVER_CONTAINER
from lth.cluster.pods import pod_selector, stuck_pods

NS = "ml"
IMAGE = "ghcr.io/lth-dev/lth-trainer:0.1.0"
BACK_OFF = f'Back-off pulling image "{IMAGE}"'
PULL_ERROR = (
    f'rpc error: code = NotFound desc = failed to pull and unpack image "{IMAGE}": '
    f'failed to resolve reference "{IMAGE}": {IMAGE}: not found'
)
UNSCHEDULABLE = (
    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)


def run_as_root(pod: str, container: str) -> str:
    return (
        f'container has runAsNonRoot and image will run as root (pod: "{pod}_{NS}(4f6c1c52-0d1e-4b7a-'
        f'9c55-6a4f0e1d2b3c)", container: {container})'
    )


def waiting(name: str, reason: str, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message is not None:
        state["message"] = message
    return {"name": name, "ready": False, "restartCount": 0, "image": IMAGE, "state": {"waiting": state}}


def running(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "ready": True,
        "restartCount": 0,
        "image": IMAGE,
        "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}},
    }


def terminated(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "alpine:3.10",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }


def pod(
    name: str,
    phase: str = "Pending",
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions
        if conditions is not None
        else [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }
    if containers is not None:
        status["containerStatuses"] = containers
    if init is not None:
        status["initContainerStatuses"] = init
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels or {}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status}


def unschedulable(name: str) -> dict[str, Any]:
    """A pod asking for more GPUs than any node has: Pending, no nodeName, no container statuses."""
    return pod(
        name,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    )


MASTER = "r50-level-00-master-0"
WORKER = "r50-level-00-worker-0"


def test_a_healthy_running_pod_holds_nothing() -> None:
    healthy = pod(MASTER, "Running", containers=[running(TRAINER_CONTAINER)])
    worker = pod(
        WORKER, "Running", containers=[running(TRAINER_CONTAINER)], init=[terminated("init-pytorch")]
    )
    assert stuck_pods([healthy, worker]) is None
    assert stuck_pods([]) is None


def test_a_pod_still_creating_its_containers_is_not_stuck() -> None:
    creating = pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ContainerCreating")])
    initialising = pod(WORKER, containers=[waiting(TRAINER_CONTAINER, "PodInitializing")])
    assert stuck_pods([creating, initialising]) is None


def test_unschedulable_names_the_pod_and_the_schedulers_words() -> None:
    stuck = stuck_pods([unschedulable(MASTER)])
    assert stuck == Stuck("Unschedulable", f"pod {MASTER}", UNSCHEDULABLE)
    assert stuck.message == f"pod {MASTER}: Unschedulable: {UNSCHEDULABLE}"


def test_image_pull_back_off_names_pod_container_and_image() -> None:
    stuck = stuck_pods([pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])])
    assert stuck == Stuck("ImagePullBackOff", f"pod {MASTER} container pytorch", BACK_OFF)
    assert IMAGE in stuck.message and MASTER in stuck.message


def test_err_image_pull_is_the_same_cause_as_its_back_off_with_the_pull_error_kept() -> None:
    pulling = stuck_pods([pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ErrImagePull", PULL_ERROR)])])
    backing_off = stuck_pods(
        [pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])]
    )
    assert pulling is not None and backing_off is not None
    assert pulling.reason == backing_off.reason == "ImagePullBackOff"
    assert pulling.detail == f"ErrImagePull: {PULL_ERROR}"
    # the planner tells one cause from another by subject and reason, not by the kubelet's detail
    assert pulling.described_by(backing_off.message) and backing_off.described_by(pulling.message)


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("ErrImageNeverPull", f'Container image "{IMAGE}" is not present with pull policy of Never'),
        (
            "InvalidImageName",
            'Failed to apply default image tag "Trainer:1": couldn\'t parse image name "Trainer:1": '
            "invalid reference format: repository name (library/Trainer) must be lowercase",
        ),
    ],
)
def test_other_image_reasons_are_kept_as_the_kubelet_writes_them(reason: str, message: str) -> None:
    stuck = stuck_pods([pod(MASTER, containers=[waiting(TRAINER_CONTAINER, reason, message)])])
    assert stuck == Stuck(reason, f"pod {MASTER} container pytorch", message)


def test_the_training_operators_init_container_refused_as_root_keeps_the_worker_pending() -> None:
    """Issue 12's second failure: init-pytorch (alpine, no USER) under pod-level runAsNonRoot."""
    message = run_as_root(WORKER, "init-pytorch")
    worker = pod(
        WORKER,
        init=[waiting("init-pytorch", "CreateContainerConfigError", message)],
        containers=[waiting(TRAINER_CONTAINER, "PodInitializing")],
    )
    master = pod(MASTER, "Running", containers=[running(TRAINER_CONTAINER)])
    stuck = stuck_pods([master, worker])
    assert stuck == Stuck("CreateContainerConfigError", f"pod {WORKER} init container init-pytorch", message)
    assert stuck.message.startswith(f"pod {WORKER} init container init-pytorch: CreateContainerConfigError: ")


def test_init_containers_come_before_containers_in_a_pod() -> None:
    both = pod(
        WORKER,
        init=[waiting("init-pytorch", "ImagePullBackOff", 'Back-off pulling image "alpine:3.10"')],
        containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)],
    )
    stuck = stuck_pods([both])
    assert stuck is not None and stuck.subject == f"pod {WORKER} init container init-pytorch"


def test_unschedulable_comes_before_image_pulls_and_image_pulls_before_config_errors() -> None:
    config = pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "CreateContainerConfigError", "x")])
    pull = pod(WORKER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])
    gpu = unschedulable("r50-level-00-worker-1")
    assert stuck_pods([config, pull, gpu]).reason == "Unschedulable"  # type: ignore[union-attr]
    assert stuck_pods([config, pull]).reason == "ImagePullBackOff"  # type: ignore[union-attr]
    assert stuck_pods([config]).reason == "CreateContainerConfigError"  # type: ignore[union-attr]


def test_pods_are_read_in_name_order_whatever_the_list_order() -> None:
    first = pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])
    second = pod(WORKER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])
    assert stuck_pods([second, first]) == stuck_pods([first, second])
    assert stuck_pods([second, first]).subject.startswith(f"pod {MASTER} ")  # type: ignore[union-attr]


def test_finished_and_deleted_pods_are_passed_over() -> None:
    old = pod(MASTER, containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)], deleting=True)
    failed = pod(WORKER, "Failed", containers=[waiting(TRAINER_CONTAINER, "ImagePullBackOff", BACK_OFF)])
    assert stuck_pods([old, failed]) is None


def test_a_spark_driver_pending_on_its_image() -> None:
    app = "r50-prep"
    image = "ghcr.io/lth-dev/lth-spark:0.1.0"
    driver = pod(
        f"{app}-driver",
        containers=[waiting(SPARK_DRIVER_CONTAINER, "ImagePullBackOff", f'Back-off pulling image "{image}"')],
        labels={"sparkoperator.k8s.io/app-name": app, "spark-role": "driver"},
    )
    stuck = stuck_pods([driver])
    assert stuck == Stuck(
        "ImagePullBackOff",
        "pod r50-prep-driver container spark-kubernetes-driver",
        f'Back-off pulling image "{image}"',
    )


def test_spark_executors_without_a_node_are_explained() -> None:
    driver = pod("r50-prep-driver", "Running", containers=[running(SPARK_DRIVER_CONTAINER)])
    executor = unschedulable("r50-prep-3f1c9a0b8e7d6c5b-exec-1")
    assert stuck_pods([driver, executor]).subject == "pod r50-prep-3f1c9a0b8e7d6c5b-exec-1"  # type: ignore[union-attr]


def test_pods_are_selected_by_the_label_upstream_puts_on_them() -> None:
    assert pod_selector("PyTorchJob", "r50-level-00") == "training.kubeflow.org/job-name=r50-level-00"
    assert pod_selector("SparkApplication", "r50-prep") == "sparkoperator.k8s.io/app-name=r50-prep"


def suspended_job(queue: str | None, condition: bool = True) -> dict[str, Any]:
    labels = {LABEL_KUEUE_QUEUE: queue} if queue else {}
    conditions = [{"type": "Created", "status": "True", "reason": "PyTorchJobCreated"}]
    if condition:
        conditions.append(
            {
                "type": "Suspended",
                "status": "True",
                "reason": "PyTorchJobSuspended",
                "message": "PyTorchJob r50-level-00 is suspended.",
            }
        )
    return {
        "metadata": {"name": "r50-level-00", "labels": labels},
        "spec": {"runPolicy": {"suspend": True}},
        "status": {"conditions": conditions},
    }


def test_a_suspended_job_waits_for_the_queue_its_label_names() -> None:
    child = observe_pytorch_job(suspended_job("gpu-queue"))
    assert child.state == "Pending" and child.message == "PyTorchJob r50-level-00 is suspended."
    assert child.stuck is not None and child.stuck.reason == "WaitingForQueue"
    assert child.stuck.subject == "PyTorchJob r50-level-00" and "'gpu-queue'" in child.stuck.detail


def test_a_job_the_training_operator_has_not_suspended_yet_waits_too() -> None:
    child = observe_pytorch_job(suspended_job("gpu-queue", condition=False))
    assert child.stuck is not None and child.stuck.reason == "WaitingForQueue"


def test_a_suspended_job_without_a_queue_says_nothing_will_admit_it() -> None:
    child = observe_pytorch_job(suspended_job(None))
    assert child.stuck is not None and "nothing will admit it" in child.stuck.detail


def test_an_admitted_running_job_is_not_waiting() -> None:
    job = suspended_job("gpu-queue", condition=False)
    job["spec"]["runPolicy"]["suspend"] = False
    job["status"]["conditions"] += [
        {"type": "Suspended", "status": "False", "reason": "PyTorchJobResumed"},
        {"type": "Running", "status": "True", "reason": "PyTorchJobRunning"},
    ]
    assert observe_pytorch_job(job).stuck is None
