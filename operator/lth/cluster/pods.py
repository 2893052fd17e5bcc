"""What the operator reads off a child's pods: why they cannot run (stuck), and why one failed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from lth.api import StuckReason
from lth.api.observed import ChildKind, ObservedChild, Stuck
from lth.api.workload import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
)
from lth.cluster.objects import (
    POD_LABEL_OF,
    TRAINER_CONTAINER,
    as_list,
    as_mapping,
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
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = str(condition.get("message") or "no node fits the pod")
                return Stuck("Unschedulable", f"pod {_pod_name(pod)}", detail)
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
