"""What the operator reads off a child's pods and its events: why they cannot run (stuck), why
one could not even be created (refused), and why one failed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from lth.api import StuckReason
from lth.api.observed import ChildKind, ObservedChild, Stuck
from lth.api.workload import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
)
from lth.cluster.admission import fixes_for
from lth.cluster.children.objects import (
    POD_LABEL_OF,
    TRAINER_CONTAINER,
    as_list,
    as_mapping,
    event_time,
    is_deleting,
)


def with_pod_failure(
    child: ObservedChild, pod: Mapping[str, Any], container: str = TRAINER_CONTAINER
) -> ObservedChild:
    """A failed child with its workload's own words: the termination message of the master's
    trainer or of the Spark driver (the file or field at fault), and whether it said its input
    is bad (not worth a retry)."""
    for status in as_list(as_mapping(pod.get("status")).get("containerStatuses")):
        if as_mapping(status).get("name") != container:
            continue
        terminated = as_mapping(as_mapping(as_mapping(status).get("state")).get("terminated"))
        reason = terminated.get("message")
        message = child.message
        if isinstance(reason, str) and reason.strip() and not reason.lstrip().startswith("{"):
            message = f"{message.rstrip('.')}: {reason.strip()}" if message else reason.strip()
        bad_input = terminated.get("exitCode") == EXIT_BAD_INPUT or (
            isinstance(reason, str) and reason.startswith(BAD_INPUT)
        )
        return replace(child, message=message, retryable=child.retryable and not bad_input)
    return child


# --------------------------------------------------------------------------- stuck pods

IMAGE_WAITING_REASONS: dict[str, StuckReason] = {
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "ErrImageNeverPull": "ErrImageNeverPull",
    "InvalidImageName": "InvalidImageName",
    "ImageInspectError": "ImageInspectError",
}
"""The kubelet's image waiting reasons (pkg/kubelet/images/types.go) and the run's reason for
each. A failed pull shows ErrImagePull, then ImagePullBackOff until the next try, and again:
both are one cause, so the run's condition does not flap with them."""

CONFIG_WAITING_REASON: StuckReason = "CreateContainerConfigError"
"""The kubelet could not build the container's config, e.g. runAsNonRoot against an image that
runs as root (`ErrCreateContainerConfig`, pkg/kubelet/kuberuntime/kuberuntime_container.go)."""


def pod_selector(kind: ChildKind, name: str) -> str:
    """The label selector of a child's pods."""
    return f"{POD_LABEL_OF[kind]}={name}"


def stuck_pods(pods: Iterable[Mapping[str, Any]]) -> Stuck | None:
    """The first reason a child's pods (JSON as the API returns them) cannot run; None when
    nothing holds them. A pod the scheduler cannot place comes first, then image pulls, then
    containers the kubelet cannot configure; init containers before containers, pods by name.
    Finished pods and pods being deleted are passed over."""
    live = sorted(
        (
            pod
            for pod in pods
            if as_mapping(pod.get("status")).get("phase", "Pending") in ("Pending", "Running")
            and not is_deleting(pod)
        ),
        key=lambda pod: str(as_mapping(pod.get("metadata")).get("name", "")),
    )
    for pod in live:
        for condition in as_list(as_mapping(pod.get("status")).get("conditions")):
            condition = as_mapping(condition)
            if condition.get("type") != "PodScheduled" or condition.get("status") != "False":
                continue
            if condition.get("reason") == "Unschedulable":
                detail = str(condition.get("message") or "no node fits the pod")
                return Stuck("Unschedulable", f"pod {_pod_name(pod)}", detail)
            if condition.get("reason") == "SchedulingGated":
                return _gated(pod, str(condition.get("message") or ""))
    waiting = [(pod, *found) for pod in live for found in _waiting_containers(pod)]
    config: dict[str, StuckReason] = {CONFIG_WAITING_REASON: CONFIG_WAITING_REASON}
    for reasons in (IMAGE_WAITING_REASONS, config):
        for pod, where, reason, message in waiting:
            if reason in reasons:
                detail = message or reason
                if reasons[reason] != reason:
                    detail = f"{reason}: {detail}"  # the kubelet's own reason, where the run's differs
                return Stuck(reasons[reason], f"pod {_pod_name(pod)} {where}", detail)
    return None


KUEUE_GATE = "kueue.x-k8s.io/admission"
"""The scheduling gate Kueue's pod integration holds a pod with until its Workload is admitted
(`SchedulingGateName`, kueue pkg/controller/jobs/pod/constants)."""


def _gated(pod: Mapping[str, Any], message: str) -> Stuck:
    """A pod the scheduler will not look at while it has scheduling gates (SchedulingGated)."""
    gates = [
        str(as_mapping(g).get("name")) for g in as_list(as_mapping(pod.get("spec")).get("schedulingGates"))
    ]
    if KUEUE_GATE in gates:
        detail = f"held by Kueue (scheduling gate {KUEUE_GATE}) until its Workload is admitted from its queue"
        return Stuck("WaitingForQueue", f"pod {_pod_name(pod)}", detail)
    return Stuck("Unschedulable", f"pod {_pod_name(pod)}", f"SchedulingGated: {message} ({', '.join(gates)})")


REFUSED_POD_REASONS = ("FailedCreatePod", "FailedCreate")
"""The Warning events of a controller whose pod create the API server refused: the training
operator's (`RealPodControl.createPods`, pkg/controller.v1/control/pod_control.go) and
kube-controller-manager's (`FailedCreatePodReason`, pkg/controller/controller_utils.go), both
`Error creating: <the server's error>`."""


def refused_pods(
    kind: ChildKind,
    name: str,
    events: Iterable[Mapping[str, Any]],
    controller_kind: str,
    uid: str | None = None,
    since: datetime | None = None,
) -> Stuck | None:
    """The latest pod create refused for this child: of the events about the object that creates
    its pods (the child itself, or a TrainJob's Job), those with its uid, or without one, those
    since `since` (an earlier attempt's Job had the same name). QuotaExceeded for a quota, else
    PodRefused with the server's words and, for Pod Security, the fixes; None when no pod of it
    was refused."""
    latest: Mapping[str, Any] | None = None
    for event in events:
        involved = as_mapping(event.get("involvedObject"))
        if event.get("reason") not in REFUSED_POD_REASONS or involved.get("kind") != controller_kind:
            continue
        if uid is not None and involved.get("uid") != uid:
            continue
        if since is not None and event_time(event) < since:
            continue
        if latest is None or event_time(event) >= event_time(latest):
            latest = event
    if latest is None:
        return None
    detail = str(latest.get("message") or "").removeprefix("Error creating: ")
    if "exceeded quota" in detail:
        return Stuck("QuotaExceeded", f"{kind} {name}", f"its pod was refused: {detail}")
    fixes = fixes_for(detail)
    return Stuck("PodRefused", f"{kind} {name}", detail + (f"; fixes: {fixes}" if fixes else ""))


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str(as_mapping(pod.get("metadata")).get("name", "?"))


def _waiting_containers(pod: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(where, reason, message) of each waiting container, init containers first."""
    status = as_mapping(pod.get("status"))
    found = []
    for field, what in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in as_list(status.get(field)):
            waiting = as_mapping(as_mapping(as_mapping(container).get("state")).get("waiting"))
            if waiting:
                found.append(
                    (
                        f"{what} {as_mapping(container).get('name', '?')}",
                        str(waiting.get("reason") or ""),
                        str(waiting.get("message") or ""),
                    )
                )
    return found
