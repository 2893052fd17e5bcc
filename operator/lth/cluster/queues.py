"""Why a child suspended for Kueue waits, read off its Workload (kueue.x-k8s.io).

Kueue's job reconciler makes a Workload for every job of a kind it manages at once, labelled
`kueue.x-k8s.io/job-uid` (kueue v0.19 pkg/controller/jobframework, constants.JobUIDLabel), and
unsuspends the job once the Workload is admitted. A kind it does not manage gets none: its
webhooks are no-ops (`WithNoopWebhook`) and the job stays suspended for ever. Kueue v0.19 ships
with `kubeflow.org/pytorchjob` off ("kubeflow training v1 is being deprecated", kueue #12606).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from lth.api.observed import ChildKind, Stuck
from lth.cluster.children.objects import LABEL_KUEUE_QUEUE, as_list, as_mapping

GROUP = "kueue.x-k8s.io"
WORKLOAD_VERSIONS = ("v1beta2", "v1beta1")
"""Served by Kueue v0.19 (v1beta2 stored); older releases serve v1beta1 only."""
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
NO_WORKLOAD_GRACE_SECONDS = float(os.environ.get("LTH_NO_WORKLOAD_GRACE_SECONDS", "60"))
"""How long a suspended job may have no Workload before the run says Kueue does not manage it
(Kueue makes one within a second or two of the job's create)."""
FRAMEWORK: dict[ChildKind, str] = {
    "PyTorchJob": "kubeflow.org/pytorchjob",
    "TrainJob": "trainer.kubeflow.org/trainjob",
    "Job": "batch/job",
    "SparkApplication": "sparkoperator.k8s.io/sparkapplication",
}
"""The integrations.frameworks entry of each child kind."""
DEFAULT_OFF: dict[ChildKind, str] = {
    "PyTorchJob": " (off by default since Kueue v0.19), or run the levels as TrainJobs "
    "(spec.resources.trainingApi: TrainJob)",
    "SparkApplication": " (off by default)",
    "TrainJob": " (on by default since Kueue v0.14: this Kueue's configuration leaves it out, or it is "
    "older)",
    "Job": " (on by default)",
}
"""What Kueue v0.19's shipped configuration does with each kind's integration."""


def queue_of(obj: Mapping[str, Any]) -> str | None:
    queue = as_mapping(as_mapping(obj.get("metadata")).get("labels")).get(LABEL_KUEUE_QUEUE)
    return queue if isinstance(queue, str) and queue else None


def waiting_for_queue(
    kind: ChildKind,
    name: str,
    queue: str | None,
    age_seconds: float,
    workloads: Sequence[Mapping[str, Any]] | None,
) -> Stuck:
    """Why a suspended child waits; `workloads` are Kueue's for it (None: no Kueue API served)."""
    subject = f"{kind} {name}"
    if queue is None:
        return Stuck(
            "WaitingForQueue",
            subject,
            f"suspended with no Kueue queue (label {LABEL_KUEUE_QUEUE}): Kueue will not admit it "
            "without one; set spec.resources.queueName",
        )
    if workloads is None:
        return Stuck(
            "NotManagedByKueue",
            subject,
            f"suspended for queue {queue!r}, but this cluster serves no Kueue API ({GROUP}): nothing "
            "will admit it; install Kueue, or remove spec.resources.queueName",
        )
    if not workloads:
        if age_seconds < NO_WORKLOAD_GRACE_SECONDS:
            return Stuck("WaitingForQueue", subject, f"suspended until Kueue admits it from queue {queue!r}")
        return Stuck(
            "NotManagedByKueue",
            subject,
            f"suspended for queue {queue!r}, but Kueue made no Workload for it in "
            f"{NO_WORKLOAD_GRACE_SECONDS:.0f} s: Kueue does not manage {FRAMEWORK[kind]}; add it to "
            "integrations.frameworks in Kueue's configuration" + DEFAULT_OFF[kind],
        )
    workload = workloads[0]
    wl_name = as_mapping(workload.get("metadata")).get("name", "?")
    for condition in as_list(as_mapping(workload.get("status")).get("conditions")):
        condition = as_mapping(condition)
        if condition.get("type") == "QuotaReserved" and condition.get("status") == "False":
            why = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
            return Stuck(
                "WaitingForQueue", subject, f"suspended until Kueue admits its Workload {wl_name}: {why}"
            )
    return Stuck(
        "WaitingForQueue",
        subject,
        f"suspended until Kueue admits its Workload {wl_name} from queue {queue!r}",
    )
