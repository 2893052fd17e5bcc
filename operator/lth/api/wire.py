"""How the API looks on the wire: its group and version, the base model (camelCase, unknown fields
refused), and the patterns its string fields share. Imports only pydantic."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "lth.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LotteryTicketRun"
PLURAL = "lotteryticketruns"
SINGULAR = "lotteryticketrun"
SHORT_NAMES = ["ltr"]

MEMORY_PATTERN = r"^[0-9]+[kmgt]?$"
"""Spark's memory notation (`4g`, `512m`), as spark.driver.memory takes it."""

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
"""A Kubernetes resource quantity (`16`, `500m`, `64Gi`)."""

REWIND_PATTERN = r"^(0|auto|[0-9]+(\.[0-9]+)?ep|[0-9]+it)$"
"""`6ep` or `0.5ep` (epochs), `500it` (optimizer steps), `0` (the initial weights), or `auto`
(the instability analysis chooses)."""

LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kueue queue name: a DNS-1123 subdomain (`ValidateQueueName`, kueue
pkg/controller/jobframework/validation.go), as the queue-name label's value."""

Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ApiModel(BaseModel):
    """camelCase on the wire (as Kubernetes APIs are), snake_case in Python; unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML and in the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
