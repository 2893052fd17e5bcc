"""How the API looks on the wire: its group and version, the base model (camelCase, unknown fields
refused), and the patterns its string fields share. Imports only pydantic."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
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
QUANTITY_FACTORS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
QUANTITY_FACTORS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes quantity (`16Gi`, `500M`) in bytes; the API's pattern guarantees the form."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", quantity)
    assert match, quantity
    return float(match.group(1)) * QUANTITY_FACTORS[match.group(2)]


REWIND_PATTERN = r"^(0|auto|[0-9]+(\.[0-9]+)?ep|[0-9]+it)$"
"""`6ep` or `0.5ep` (epochs), `500it` (optimizer steps), `0` (the initial weights), or `auto`
(the instability analysis chooses)."""

LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (RFC 1123 subdomain): a Secret's, a run's."""

QUEUE_NAME_PATTERN = DNS_SUBDOMAIN_PATTERN
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


# --------------------------------------------------------------------------- core/v1 shapes


class Toleration(ApiModel):
    """A pod toleration, as in core/v1."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class SecretKeySelector(ApiModel):
    """A key of a Secret in the run's namespace, as core/v1 names one."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="The Secret's name."
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key within it."
    )


class EnvSource(ApiModel):
    secret_key_ref: SecretKeySelector = Field(description="The value of one key of a Secret.")


class EnvFromSecret(ApiModel):
    """An environment variable whose value the kubelet takes from a Secret: the value never
    passes through the run's spec, status, exports or command lines."""

    value_from: EnvSource


def _env_kind(value: Any) -> str:
    return "str" if isinstance(value, str) else ""


EnvValue = Annotated[Annotated[str, Tag("str")] | Annotated[EnvFromSecret, Tag("")], Discriminator(_env_kind)]
"""A plain value, or a Secret's key. The union is told apart by the value's type, so a wrong
object is refused for what is wrong in it (its tag, "", drops out of the field path)."""


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


CREDENTIAL_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY)"
    r"|(^|_)(PASS|PWD|TOKENS?|KEY|AUTH|AUTHORIZATION|SESSION|COOKIE|SIGNATURE|SAS)(_|$)",
    re.IGNORECASE,
)
"""Environment variable names that hold credentials (HF_TOKEN, WANDB_API_KEY, PGPASSWORD...)."""
CREDENTIAL_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_\w{20,}|\bhf_[A-Za-z0-9]{20,}|\bxox[abprs]-[\w-]{10,}|\bsk-[\w-]{20,}"
    r"|\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"
)
"""Values shaped like well-known credentials: private keys, AWS key ids, GitHub, Hugging Face,
Slack and API tokens, JSON web tokens."""


def credential_problem(text: str) -> str | None:
    """Why `text` may not be written in a spec, which is copied into the status, exports and
    command lines: a URL's user info or query credential, or a value shaped like a key or token."""
    if _USERINFO.search(text):
        return f"{redact(text)} carries user info (credentials): give them by reference, from a Secret"
    if _CREDENTIAL_QUERY.search(text):
        return f"{redact(text)} carries a credential in its query: give it by reference, from a Secret"
    if CREDENTIAL_VALUE.search(text):
        return "holds what looks like a credential (a key or token): take it from a Secret"
    return None


BY_REFERENCE = "{valueFrom: {secretKeyRef: {name: SECRET, key: KEY}}}"


def credential_fields(spec: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """(field, why) of every credential written into a spec's wire form: a spec is copied into
    the status, the exported ticket, the workloads' command lines and the export Job's
    environment, so credentials go by reference only (a plain env value named like a secret,
    a URL's user info or query credential, a value shaped like a key or token)."""
    found = []
    for name, value in spec.get("resources", {}).get("env", {}).items():
        if isinstance(value, str) and CREDENTIAL_NAME.search(name) and value != REDACTED:
            found.append(
                (
                    f"{path}.resources.env.{name}",
                    "a credential written as a plain value, which the status and every export "
                    f"would show: take it from a Secret ({BY_REFERENCE})",
                )
            )
    for field, text in _strings(spec, path):
        problem = credential_problem(text)
        if problem is not None:
            found.append((field, problem))
    return found


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string of a wire form with its field path."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [pair for key, inner in value.items() for pair in _strings(inner, f"{path}.{key}")]
    if isinstance(value, list):
        return [pair for i, inner in enumerate(value) for pair in _strings(inner, f"{path}[{i}]")]
    return []


S3_SCHEME = "s3://"
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""S3's bucket naming rules (3-63 lowercase letters, digits, dots, hyphens), as MinIO enforces them."""


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as s3://BUCKET/PREFIX, or None."""
    if not url.startswith(S3_SCHEME):
        return "not an s3:// URL (s3://BUCKET/PREFIX)"
    bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
    if not S3_BUCKET.fullmatch(bucket):
        return f"{bucket!r} is not a bucket name (3-63 lowercase letters, digits, dots, hyphens)"
    parts = prefix.strip("/").split("/")
    if prefix.strip("/") and any(part in ("", ".", "..") for part in parts):
        return "the prefix has empty, '.' or '..' parts"
    return None
