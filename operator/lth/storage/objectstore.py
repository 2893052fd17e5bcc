"""Exported tickets in S3-compatible object storage (AWS S3, MinIO, Ceph...): `s3://bucket/prefix`.

`upload_ticket` puts a verified ticket directory under a prefix, ticket.json last, so a reader
never sees a description whose files are not there yet; `fetch_ticket` brings one back with the
contract of `lth.storage.fetch.download`: every file it lists is kept only once its SHA-256 matches.

Credentials, region and endpoint come from the standard AWS_* environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL;
the export Job gets them from a Secret), or an explicit `endpoint_url`. A store that refuses
boto3's default CRC32 request checksums (older MinIO, Ceph) takes
AWS_REQUEST_CHECKSUM_CALCULATION=when_required; the SHA-256 of ticket.json is checked anyway.

boto3 (the `export` extra) is imported when a bucket is first used, so the control plane
imports this module without it. Every failure is a `TicketError` of one line naming the
object, bucket or endpoint.
"""

from __future__ import annotations

import functools
import importlib
import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.api.naming import CURVES_FILE, MODEL_CARD_FILE, PLOT_FILE, SPEC_FILE, TICKET_FILE
from lth.api.wire import S3_SCHEME as SCHEME
from lth.api.wire import redact, url_problem
from lth.storage.files import atomic_write, atomic_write_bytes, sha256
from lth.storage.tickets import MAX_DESCRIPTION_BYTES, TicketError, inspect, read_description

UNLISTED_FILES = (SPEC_FILE, MODEL_CARD_FILE, PLOT_FILE, CURVES_FILE)
"""Files of an exported ticket that ticket.json does not list (no checksum): fetched when present."""
UNLISTED_BYTES = 16 << 20
"""The spec, the model card, the plot and the learning curves are a few KB to a few hundred KB each."""
CREDENTIAL_VARIABLES = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if temporary)"


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ("" or without a trailing '/')."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        problem = url_problem(url)
        if problem is not None:
            raise TicketError(f"{url}: {problem}")
        bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
        return cls(bucket, prefix.strip("/"))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str) -> str:
        return f"{SCHEME}{self.bucket}/{self.key(name)}"


def upload_ticket(ticket_dir: Path, url: str, endpoint_url: str | None = None) -> list[str]:
    """Upload the exported ticket in `ticket_dir` to `url` (s3://bucket/prefix); the object URLs.

    The directory is verified first (`lth.storage.tickets.inspect`: a corrupt ticket is refused). Every
    regular file goes to `<prefix>/<name>`, ticket.json last; hidden files (a writer's leftover
    temporaries) are not part of a ticket. Uploading again overwrites: the same objects result.
    """
    location = S3Location.parse(url)
    inspect(ticket_dir)
    names = sorted(
        path.name
        for path in ticket_dir.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.name != TICKET_FILE
    )
    store = _Store(endpoint_url)
    for name in [*names, TICKET_FILE]:
        store.upload(location, name, ticket_dir / name)
    return [location.url(name) for name in [*names, TICKET_FILE]]


def fetch_ticket(url: str, dest: Path, endpoint_url: str | None = None) -> Path:
    """Fetch the exported ticket at `url` (s3://bucket/prefix) into `dest` and verify it; `dest`.

    As `lth.storage.fetch.download`: ticket.json first, then each file it lists, each written under a
    temporary name and kept only when its SHA-256 matches; a file already in `dest` with the
    right checksum is not fetched again. The unlisted files of an export (spec.json, README.md,
    accuracy.png) are copied when the bucket has them. ticket.json is written last.
    """
    location = S3Location.parse(url)
    store = _Store(endpoint_url)
    description = store.read(location, TICKET_FILE, MAX_DESCRIPTION_BYTES)
    files = read_description(description, location.url(TICKET_FILE))["files"]
    dest.mkdir(parents=True, exist_ok=True)
    for name, expected in files.items():
        target = dest / name
        if target.is_file() and sha256(target) == expected["sha256"]:
            continue

        def fetch_checked(temporary: Path, name: str = name, expected: dict[str, Any] = expected) -> None:
            store.download(location, name, temporary, expected["bytes"], exact=True)
            if sha256(temporary) != expected["sha256"]:
                raise TicketError(
                    f"{location.url(name)}: checksum mismatch with {TICKET_FILE}, the object changed"
                )

        atomic_write(target, fetch_checked)
    for name in UNLISTED_FILES:
        with suppress(_NoSuchObject):
            atomic_write(dest / name, functools.partial(store.download, location, name, limit=UNLISTED_BYTES))
    atomic_write_bytes(dest / TICKET_FILE, description)
    return dest


class _NoSuchObject(TicketError):
    """The object is not in the bucket (some exports have no plot, say)."""


class _Store:
    """An S3 client, and its failures as one-line TicketErrors naming the object, bucket or endpoint."""

    def __init__(self, endpoint_url: str | None) -> None:
        boto3 = _import("boto3")
        self.errors = _import("botocore.exceptions")
        self.transfer_errors = _import("boto3.exceptions")
        try:
            # A session of its own: the environment is read now, not when the process began.
            self.client: Any = boto3.Session().client("s3", endpoint_url=endpoint_url)
        except ValueError as error:  # botocore: "Invalid endpoint: ..."
            where = redact(str(endpoint_url))
            raise TicketError(f"{where}: not an S3 endpoint URL ({_one_line(error)})") from None
        except self.errors.BotoCoreError as error:
            raise TicketError(f"cannot set up an S3 client: {_one_line(error)}") from None
        self.endpoint: str = redact(self.client.meta.endpoint_url)

    def read(self, location: S3Location, name: str, limit: int) -> bytes:
        """An object's body, at most `limit` bytes."""
        with self._failures(location, name):
            response = self.client.get_object(Bucket=location.bucket, Key=location.key(name))
            body: bytes = response["Body"].read(limit + 1)
        if len(body) > limit:
            raise TicketError(f"{location.url(name)}: more than the {limit} bytes it may hold")
        return body

    def download(self, location: S3Location, name: str, path: Path, limit: int, exact: bool = False) -> None:
        """An object into `path`, streamed and cut off past `limit` bytes (`exact`: it must be
        `limit` bytes, the size ticket.json declares)."""
        written = 0
        with self._failures(location, name), path.open("wb") as out:
            response = self.client.get_object(Bucket=location.bucket, Key=location.key(name))
            for chunk in response["Body"].iter_chunks(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise TicketError(f"{location.url(name)}: more than the {limit} bytes it may hold")
                out.write(chunk)
        if exact and written != limit:
            raise TicketError(f"{location.url(name)}: {written} bytes, {TICKET_FILE} declares {limit}")

    def upload(self, location: S3Location, name: str, path: Path) -> None:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with self._failures(location, name):
            self.client.upload_file(
                str(path), location.bucket, location.key(name), ExtraArgs={"ContentType": content_type}
            )

    @contextmanager
    def _failures(self, location: S3Location, name: str) -> Iterator[None]:
        errors = self.errors
        try:
            yield
        except (errors.ClientError, errors.BotoCoreError, self.transfer_errors.Boto3Error) as error:
            raise self._translate(_cause(error), location, name) from None

    def _translate(self, error: BaseException, location: S3Location, name: str) -> TicketError:
        errors, url = self.errors, location.url(name)
        if isinstance(error, (errors.NoCredentialsError, errors.PartialCredentialsError)):
            return TicketError(f"{url}: no S3 credentials; set {CREDENTIAL_VARIABLES}")
        if isinstance(error, (errors.ConnectionError, errors.HTTPClientError)):  # refused, timed out, TLS
            return TicketError(f"{self.endpoint}: cannot reach the S3 endpoint ({_one_line(error)})")
        if not isinstance(error, errors.ClientError):
            return TicketError(f"{url}: {_one_line(error)}")
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        message = _one_line(details.get("Message") or error)
        if code == "NoSuchBucket":
            return TicketError(f"{SCHEME}{location.bucket}: no such bucket at {self.endpoint}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return _NoSuchObject(f"{url}: no such object")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return TicketError(f"{url}: access denied ({message}); check {CREDENTIAL_VARIABLES}")
        return TicketError(f"{url}: {code or 'refused'} ({message})")


def _cause(error: BaseException) -> BaseException:
    """The botocore error under boto3's transfer wrappers (S3UploadFailedError, RetriesExceededError)."""
    last = getattr(error, "last_exception", None)
    if isinstance(last, BaseException):
        return last
    if type(error).__name__ == "S3UploadFailedError" and error.__context__ is not None:
        return error.__context__
    return error


def _one_line(error: object) -> str:
    """An error as one line, without the credentials an endpoint URL may carry."""
    return redact(" ".join(str(error).split()))


def _import(module: str) -> Any:
    """A module of boto3 (untyped, hence Any), or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TicketError("s3:// URLs need boto3: pip install 'lottery-ticket-operator[export]'") from None
