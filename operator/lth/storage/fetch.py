"""Fetching an exported ticket from a URL: http(s):// here, s3:// through `lth.storage.objectstore`.

ticket.json first, then each file it lists, each kept only once its SHA-256 matches. A remote
ticket is not trusted: only the ticket format's own file names are fetched and written (never
`.bashrc` or `file:x`), each from the directory URL itself, on the same scheme, host and port
(a redirect elsewhere is refused: a trainer pod must not be led to another host), and each
stream is cut off at the size ticket.json declares for it."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

from lth.api.naming import TICKET_FILE
from lth.api.wire import redact
from lth.storage.files import atomic_write, atomic_write_bytes, sha256
from lth.storage.tickets import MAX_DESCRIPTION_BYTES, TicketError, read_description

CHUNK = 1 << 20
SCHEMES = ("http", "https")


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Fetch the exported ticket at `url` (a directory URL) into `dest` and verify it.

    ticket.json first, then each file it lists; a file already in `dest` with the right
    checksum is kept, so a restarted job (or a second process) does not fetch it again.
    Each file is written under a temporary name and renamed once its SHA-256 matches.
    An s3:// URL is fetched from the object store (`lth.storage.objectstore.fetch_ticket`, the same
    contract), with the AWS_* environment variables' credentials and endpoint.
    """
    if url.startswith("s3://"):
        from lth.storage.objectstore import fetch_ticket

        return fetch_ticket(url, dest)
    base = _directory(url)
    opener = urllib.request.build_opener(_SameOrigin(base))
    where = _joined(base, TICKET_FILE)
    description = _fetch(opener, where, MAX_DESCRIPTION_BYTES, timeout)
    info = read_description(description, redact(where))
    dest.mkdir(parents=True, exist_ok=True)
    for name, expected in info["files"].items():
        target = dest / name
        if target.is_file() and sha256(target) == expected["sha256"]:
            continue

        def fetch_checked(temporary: Path, name: str = name, expected: dict[str, Any] = expected) -> None:
            source = _joined(base, name)
            with temporary.open("wb") as out:
                _stream(opener, source, out, expected["bytes"], timeout)
            if sha256(temporary) != expected["sha256"]:
                raise TicketError(f"{redact(source)}: checksum mismatch with {TICKET_FILE}, the file changed")

        atomic_write(target, fetch_checked)
    atomic_write_bytes(dest / TICKET_FILE, description)
    return dest


def _directory(url: str) -> str:
    """The ticket directory's URL, ending in `/`; refused unless plain http(s) with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise TicketError(f"{redact(url)}: not an http(s):// ticket URL")
    if parts.query or parts.fragment:
        raise TicketError(f"{redact(url)}: a ticket directory URL has no query or fragment")
    return url if url.endswith("/") else url + "/"


def _joined(base: str, name: str) -> str:
    """URL of a ticket file: under the directory URL, on its scheme and host."""
    joined = urllib.parse.urljoin(base, urllib.parse.quote(name))
    if not joined.startswith(base) or "/" in joined[len(base) :]:
        raise TicketError(f"{redact(base)}: {name!r} is not a file of the ticket directory")
    return joined


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the ticket's own scheme, host and port."""

    def __init__(self, base: str) -> None:
        self.origin = _origin(base)

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if _origin(urllib.parse.urljoin(req.full_url, newurl)) != self.origin:
            raise TicketError(
                f"{redact(req.full_url)}: redirected to {redact(newurl)}, another host or scheme: refused"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _one_line(error: BaseException) -> str:
    return redact(" ".join(str(error).split()))


def _fetch(opener: urllib.request.OpenerDirector, url: str, limit: int, timeout: float) -> bytes:
    """The body at `url`, at most `limit` bytes."""
    try:
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise TicketError(f"{redact(url)}: cannot download ({_one_line(error)})") from None
    if len(body) > limit:
        raise TicketError(f"{redact(url)}: more than the {limit} bytes it may hold")
    return body


def _stream(
    opener: urllib.request.OpenerDirector, url: str, out: IO[bytes], size: int, timeout: float
) -> None:
    """Copy the body at `url` into `out`: exactly the `size` bytes ticket.json declares (a body
    that runs past them is cut off there and refused)."""
    written = 0
    try:
        with opener.open(url, timeout=timeout) as response:
            while chunk := response.read(min(CHUNK, size - written + 1)):
                written += len(chunk)
                if written > size:
                    raise TicketError(f"{redact(url)}: more than the {size} bytes {TICKET_FILE} declares")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise TicketError(f"{redact(url)}: cannot download ({_one_line(error)})") from None
    if written != size:
        raise TicketError(f"{redact(url)}: {written} bytes, {TICKET_FILE} declares {size}")
