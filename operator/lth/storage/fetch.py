"""Fetching an exported ticket from a URL: http(s):// here, s3:// through `lth.storage.objectstore`.

ticket.json first, then each file it lists, each kept only once its SHA-256 matches."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lth.api.naming import TICKET_FILE
from lth.storage.files import atomic_write, atomic_write_bytes, sha256
from lth.storage.tickets import (
    TicketError,
)


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
    base = url if url.endswith("/") else url + "/"
    dest.mkdir(parents=True, exist_ok=True)
    description = _fetch(urllib.parse.urljoin(base, TICKET_FILE), timeout)
    try:
        info = json.loads(description)
        files = info["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise TicketError(f"{base}{TICKET_FILE}: not a ticket description ({error})") from None
    for name, expected in files.items():
        target = dest / name
        if name != Path(name).name:
            raise TicketError(f"{base}{TICKET_FILE}: file name {name!r} is not a plain file name")
        if target.is_file() and sha256(target) == expected["sha256"]:
            continue

        def fetch_checked(temporary: Path, name: str = name, expected: dict[str, Any] = expected) -> None:
            _fetch_to(urllib.parse.urljoin(base, name), temporary, timeout)
            if sha256(temporary) != expected["sha256"]:
                raise TicketError(f"{base}{name}: checksum mismatch with {TICKET_FILE}, the file changed")

        atomic_write(target, fetch_checked)
    atomic_write_bytes(dest / TICKET_FILE, description)
    return dest


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, OSError) as error:
        raise TicketError(f"{url}: cannot download ({error})") from None


def _fetch_to(url: str, path: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as error:
        path.unlink(missing_ok=True)
        raise TicketError(f"{url}: cannot download ({error})") from None
