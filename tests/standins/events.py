"""Events posted to the API server as client-go's EventRecorder posts them (tools/record).

A controller's `Recorder.Eventf(object, type, reason, message)` becomes a core/v1 Event about
the object (`involvedObject`: kind, name, namespace, uid, apiVersion), from its component
(`source.component`); the EventCorrelator folds a repeat of the same event into one object
whose `count` and `lastTimestamp` move on (`EventAggregator`/`eventLogger`, events_cache.go),
and names a new Event `<object>.<unix nanoseconds in hex>` (`makeEvent`, event.go). A
controller on the newer events API (`k8s.io/client-go/tools/events`, as controller-runtime's
`events.EventRecorder` that Kubeflow Trainer v2 uses) writes an events.k8s.io/v1 Event, which
the core/v1 API serves with `eventTime`, `action`, `reportingComponent` and `reportingInstance`
set, `firstTimestamp` and `lastTimestamp` empty, and a repeat counted in `series` (`count`,
`lastObservedTime`; tools/events/event_broadcaster.go): `Recorder(..., events_v1=True)`. The
stand-ins post what the operator reads (a controller's refused pod creates, Trainer's
reconcile errors); their other events stay in their in-memory lists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime, as eventTime and series.lastObservedTime are written."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Recorder:
    """One controller's event recorder."""

    api_client: Any
    component: str
    events_v1: bool = False
    action: str = ""
    """The events.k8s.io/v1 `action` (Trainer's is "Reconciling")"""
    _posted: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    """(object uid, type, reason, message) -> the Event that counts its repeats"""

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        key = (meta["uid"], type_, reason, message)
        stamp = now()
        name = self._posted.get(key)
        if name is not None:
            try:
                current = self.core.read_namespaced_event(name, meta["namespace"])
                repeat: dict[str, Any] = {"count": (current.count or 1) + 1, "lastTimestamp": stamp}
                if self.events_v1:
                    count = (current.series.count if current.series else 1) + 1
                    repeat = {"series": {"count": count, "lastObservedTime": micro_now()}}
                self.core.patch_namespaced_event(name, meta["namespace"], repeat)
                return
            except client.ApiException as error:
                if error.status != 404:  # the Event expired (its TTL): post a new one
                    raise
        name = f"{meta['name']}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self.component},
        }
        if self.events_v1:
            for old in ("count", "firstTimestamp", "lastTimestamp", "source"):
                body.pop(old)
            body.update(
                eventTime=micro_now(),
                action=self.action,
                reportingComponent=self.component,
                reportingInstance=f"{self.component}-0",
            )
        self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
        self._posted[key] = name
