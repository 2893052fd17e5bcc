"""What a stand-in controller with admission webhooks shares (Trainer v2 and JobSet): the API
clients it reconciles with, and its mutating and validating webhooks installed in the emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from tests.kube import emulator
from tests.kube.resources import Kind

Obj = dict[str, Any]


@dataclass
class WebhookController:
    api_client: Any
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def install(self, server: emulator.ApiServer) -> None:
        server.mutating.append(self.default)
        server.validating.append(self.validate)

    def default(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        """The mutating webhook: sets defaults on `obj` in place."""
        raise NotImplementedError

    def validate(self, server: emulator.ApiServer, kind: Kind, obj: Obj) -> None:
        """The validating webhook: raises `emulator.refused` with upstream's words."""
        raise NotImplementedError
