"""How the API looks on the wire: its group and version, the base model (camelCase, unknown fields
refused), and the patterns its string fields share. Imports only pydantic."""

from __future__ import annotations

import re
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

REWIND_PATTERN = r"^(0|[0-9]+(ep|it))$"
"""`6ep` (epochs), `500it` (optimizer steps), or `0` (the initial weights)."""

LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"

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


# --------------------------------------------------------------------------- credentials

REDACTED = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*@)")
"""User info up to the last `@` before a space or quote: a pasted secret often holds a raw `/`."""
_CREDENTIAL_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:signature|credential|token|secret|password|passwd|"
    r"api[_-]?key|access[_-]?key|sig|auth)[A-Za-z0-9_.-]*)=)(?P<value>[^&;#\s'\"<>]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the credentials a URL can carry replaced by ***: user info
    (`https://user:password@host`) and the values of query parameters that hold signatures,
    tokens, keys or passwords (a presigned URL's X-Amz-Signature, `?token=`). Every message
    that may reach a log, an event, a condition or a termination message goes through it."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _CREDENTIAL_QUERY.sub(lambda m: f"{m['key']}{REDACTED}", text)


def userinfo_problem(url: str) -> str | None:
    """Why `url` may not be written in a spec: it carries credentials (user info, or a
    credential in its query), which would be copied into status, exports and command lines."""
    if _USERINFO.search(url):
        return f"{redact(url)} carries user info (credentials): give them by reference, from a Secret"
    if _CREDENTIAL_QUERY.search(url):
        return f"{redact(url)} carries a credential in its query: give it by reference, from a Secret"
    return None
