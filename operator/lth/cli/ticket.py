"""`lth ticket inspect|fetch|upload`: exported tickets, every file's checksum verified."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from lth.cli.command import Arg, Command

SCHEMES = "http(s)://HOST/PATH/ (a ticket directory served over HTTP) or s3://BUCKET/PREFIX"
S3_ENV = (
    "s3:// URLs use the AWS_* environment variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
    "(AWS_SESSION_TOKEN), AWS_REGION, and AWS_ENDPOINT_URL for MinIO, Ceph and the like"
)


def _fetch_ticket(url: str, dest: Path, endpoint_url: str | None) -> Path:
    """A ticket at an http(s):// or s3:// URL, fetched into `dest` and verified."""
    from lth.storage.fetch import download
    from lth.storage.objectstore import fetch_ticket
    from lth.storage.tickets import TicketError

    if url.startswith("s3://"):
        return fetch_ticket(url, dest, endpoint_url)
    if not url.startswith(("http://", "https://")):
        raise TicketError(f"{url}: not a ticket URL ({SCHEMES})")
    if endpoint_url is not None:
        raise TicketError(f"--endpoint-url applies to s3:// URLs, not {url}")
    return download(url, dest)


def _print_ticket(info: dict[str, Any]) -> None:
    print(
        f"ticket of run {info.get('run')} level {info.get('level')}: {info.get('architecture')}, "
        f"{info.get('numClasses')} classes, density {info['density'] * 100:.2f}%, top-1 {info.get('top1')} "
        f"(dense {info.get('denseTop1')})"
    )
    for name, layer in info["layers"].items():
        print(f"  {name:40s} {layer['kept']:>10,d} / {layer['total']:>10,d}  {layer['density'] * 100:6.2f}%")
    _print_verified(info)


def _print_verified(info: dict[str, Any]) -> None:
    for name, file in info["files"].items():
        print(f"  {name}: sha256 {file['sha256'][:16]}... verified")


def _cmd_ticket_inspect(args: argparse.Namespace) -> int:
    from lth.storage.tickets import TicketError, inspect

    try:
        if "://" in args.ticket:
            with tempfile.TemporaryDirectory(prefix="lth-ticket-") as temporary:
                info = inspect(_fetch_ticket(args.ticket, Path(temporary), args.endpoint_url))
        elif args.endpoint_url is not None:
            raise TicketError(f"--endpoint-url applies to s3:// URLs, not {args.ticket}")
        else:
            info = inspect(Path(args.ticket))
    except TicketError as error:
        print(f"lth ticket inspect: {error}", file=sys.stderr)
        return 1
    _print_ticket(info)
    return 0


def _cmd_ticket_fetch(args: argparse.Namespace) -> int:
    from lth.storage.tickets import TicketError, inspect

    try:
        info = inspect(_fetch_ticket(args.url, args.dest, args.endpoint_url))
    except TicketError as error:
        print(f"lth ticket fetch: {error}", file=sys.stderr)
        return 1
    _print_verified(info)
    print(f"ticket in {args.dest}")
    return 0


def _cmd_ticket_upload(args: argparse.Namespace) -> int:
    from lth.storage.objectstore import upload_ticket
    from lth.storage.tickets import TicketError

    try:
        urls = upload_ticket(args.ticket, args.url, args.endpoint_url)
    except TicketError as error:
        print(f"lth ticket upload: {error}", file=sys.stderr)
        return 1
    for url in urls:
        print(f"  {url}")
    print(f"ticket uploaded to {args.url}")
    return 0


ENDPOINT = Arg.of(
    "--endpoint-url",
    metavar="URL",
    help="the S3 endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL, else AWS)",
)

COMMANDS = (
    Command(
        "ticket",
        "exported tickets: inspect, fetch and upload them",
        description=S3_ENV,
        dest="ticket_command",
        subcommands=[
            Command(
                "inspect",
                "print a ticket's description (ticket.json) after checking every file's checksum",
                _cmd_ticket_inspect,
                [Arg.of("ticket", metavar="TICKET", help=f"a ticket directory, {SCHEMES}"), ENDPOINT],
                f"TICKET is a ticket directory or a URL: {SCHEMES}; a URL is fetched into a "
                f"temporary directory first. {S3_ENV}.",
            ),
            Command(
                "fetch",
                "download an exported ticket into a directory, checking every file's SHA-256",
                _cmd_ticket_fetch,
                [
                    Arg.of("url", metavar="URL", help=SCHEMES),
                    Arg.of("dest", type=Path, metavar="DEST", help="the directory to fetch into"),
                    ENDPOINT,
                ],
                f"URL: {SCHEMES}. Files already in DEST with the right checksum are kept; a "
                f"file whose checksum does not match ticket.json is refused. {S3_ENV}.",
            ),
            Command(
                "upload",
                "upload an exported ticket directory to s3://BUCKET/PREFIX (ticket.json last)",
                _cmd_ticket_upload,
                [
                    Arg.of("ticket", type=Path, metavar="TICKET_DIR", help="an exported ticket directory"),
                    Arg.of("url", metavar="URL", help="s3://BUCKET/PREFIX"),
                    ENDPOINT,
                ],
                f"The ticket is verified first; each file becomes PREFIX/<name>, ticket.json "
                f"last; uploading again overwrites. {S3_ENV}.",
            ),
        ],
    ),
)
