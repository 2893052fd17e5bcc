"""A ticket touches only its own files: fetch and inspect take only the ticket format's file names,
stay on the ticket's own URL and host, stop at the declared sizes, and a malformed ticket.json
is one line naming the field (issue 23)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lth.api.naming import TICKET_FILE
from lth.storage.fetch import download
from lth.storage.tickets import TicketError, inspect, observe_directory
from tests.serving import serving
from tests.storage.test_tickets import write_ticket

HOSTILE_NAMES = [
    ".bashrc",
    "torch.py",
    "../outside",
    "/etc/passwd",
    "file:x",
    "data:,hello",
    "mask.safetensors/..",
]


def _listing(ticket: Path, name: str) -> None:
    """ticket.json lists `name` (with the checksum and size of a real file) beside the others."""
    info = json.loads((ticket / TICKET_FILE).read_text())
    info["files"][name] = dict(info["files"]["rewind.safetensors"])
    (ticket / TICKET_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_fetch_and_inspect_take_only_the_ticket_formats_own_file_names(tmp_path: Path, name: str) -> None:
    ticket = write_ticket(tmp_path / "served")
    (ticket / "torch.py").write_bytes((ticket / "rewind.safetensors").read_bytes())
    (ticket / ".bashrc").write_bytes((ticket / "rewind.safetensors").read_bytes())
    _listing(ticket, name)
    dest = tmp_path / "dest"
    with serving(ticket) as url, pytest.raises(TicketError) as caught:
        download(url, dest)
    assert "files" in str(caught.value) and "\n" not in str(caught.value)
    assert not dest.exists() or not any(dest.iterdir())  # nothing written, not even ticket.json
    with pytest.raises(TicketError, match="files"):
        inspect(ticket)


@contextmanager
def _server(route: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("what", [TICKET_FILE, "mask.safetensors"])
def test_no_redirect_leaves_the_tickets_host(tmp_path: Path, what: str) -> None:
    """A redirect to another host (here another port: a pod's metadata service, say) is refused;
    one within the ticket's own server is followed."""
    ticket = write_ticket(tmp_path / "ticket")
    with serving(ticket) as elsewhere:

        def route(handler: http.server.BaseHTTPRequestHandler) -> None:
            name = handler.path.rsplit("/", 1)[-1]
            if handler.path.startswith("/moved/"):  # a redirect within the server: followed
                handler.send_response(200)
                handler.end_headers()
                handler.wfile.write((ticket / name).read_bytes())
                return
            handler.send_response(302)
            handler.send_header("Location", f"{elsewhere}{name}" if name == what else f"/moved/{name}")
            handler.end_headers()

        refused = r"redirected to http://127.0.0.1:\d+/.*another host or scheme: refused"
        with _server(route) as url, pytest.raises(TicketError, match=refused):
            download(url + "ticket/", tmp_path / "dest")
    assert not (tmp_path / "dest" / what).exists()


def test_a_body_longer_than_declared_is_cut_off_while_streaming(tmp_path: Path) -> None:
    """The server sends the ticket's files and then, for the mask, bytes without end: the
    download stops at the size ticket.json declares instead of filling the disk."""
    ticket = write_ticket(tmp_path / "ticket")
    sent = [0]

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        name = handler.path.rsplit("/", 1)[-1]
        handler.send_response(200)
        handler.end_headers()
        if name != "mask.safetensors":
            handler.wfile.write((ticket / name).read_bytes())
            return
        try:
            for _ in range(64 << 10):  # up to 1 GiB
                handler.wfile.write(bytes(16 << 10))
                sent[0] += 16 << 10
        except OSError:
            pass  # the client hung up

    refused = r"mask.safetensors: more than the \d+ bytes"
    with _server(route) as url, pytest.raises(TicketError, match=refused):
        download(url, tmp_path / "dest")
    assert not (tmp_path / "dest" / "mask.safetensors").exists()
    assert sent[0] < 64 << 20


MALFORMED: list[tuple[str, Any]] = [
    ("files", {"files": None}),
    ("files.mask.safetensors", {"files": {"mask.safetensors": "abc"}}),
    ("files", {"files": "drop"}),
    ("files", "no files"),
    ("files lists no", {"files": {}}),
    ("files.rewind.safetensors.sha256", {"files": {"rewind.safetensors": {"sha256": 7, "bytes": 1}}}),
    ("files.rewind.safetensors.bytes", {"files": {"rewind.safetensors": {"sha256": "0" * 64, "bytes": -1}}}),
    ("density", {"density": "high"}),
    ("layers", {"layers": [1, 2]}),
    ("format", {"format": "something else"}),
]


def _malformed(ticket: Path, change: Any) -> None:
    info = json.loads((ticket / TICKET_FILE).read_text())
    if change == "no files":
        del info["files"]
    else:
        for key, value in change.items():
            if key == "files" and isinstance(value, dict) and value:
                info["files"] = {**info["files"], **value}
            else:
                info[key] = value
    (ticket / TICKET_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize(("field", "change"), MALFORMED)
def test_a_malformed_ticket_json_is_one_line_naming_the_field(
    tmp_path: Path, field: str, change: Any
) -> None:
    ticket = write_ticket(tmp_path / "ticket")
    _malformed(ticket, change)
    command = [sys.executable, "-m", "lth", "ticket", "inspect", str(ticket)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"lth ticket inspect: {ticket / TICKET_FILE}: ") and field in done.stderr
    observed = observe_directory(ticket)  # what the operator and `lth run` see at spec.ticket.path
    assert observed.found and observed.problem is not None and field in observed.problem


def test_a_malformed_ticket_directory_fails_the_run_as_ticket_invalid(tmp_path: Path) -> None:
    from tests.plan.test_planner import drive, transfer_spec

    ticket = write_ticket(tmp_path / "ticket")
    _malformed(ticket, {"files": None})
    spec = transfer_spec()
    spec["ticket"] = {"path": str(ticket)}
    result, world, _ = drive(spec, source=observe_directory(ticket))
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "TicketInvalid" and "files" in failed.message
    assert world.trained == []


def test_a_fifo_in_a_ticket_directory_is_refused_not_read(tmp_path: Path) -> None:
    ticket = write_ticket(tmp_path / "ticket")
    (ticket / "rewind.safetensors").unlink()
    os.mkfifo(ticket / "rewind.safetensors")
    with pytest.raises(TicketError, match=r"rewind.safetensors: not a regular file"):
        inspect(ticket)


@pytest.mark.parametrize("name", [".bashrc", "../outside", "/etc/passwd"])
def test_from_s3_too_only_the_tickets_own_names_are_written(s3: Any, tmp_path: Path, name: str) -> None:
    from lth.storage.objectstore import fetch_ticket
    from tests.s3 import BUCKET

    ticket = write_ticket(tmp_path / "ticket")
    _listing(ticket, name)
    for path in ticket.iterdir():
        s3.upload_file(str(path), BUCKET, f"t/{path.name}")
    s3.upload_file(str(ticket / "rewind.safetensors"), BUCKET, f"t/{name.lstrip('/')}")
    dest = tmp_path / "dest"
    with pytest.raises(TicketError, match=r"s3://tickets/t/ticket.json: not a ticket description: files"):
        fetch_ticket(f"s3://{BUCKET}/t", dest)
    assert not dest.exists() or not any(dest.iterdir())


def test_from_s3_an_object_larger_than_declared_is_cut_off(s3: Any, tmp_path: Path) -> None:
    from lth.storage.objectstore import fetch_ticket
    from tests.s3 import BUCKET

    ticket = write_ticket(tmp_path / "ticket")
    for path in ticket.iterdir():
        s3.upload_file(str(path), BUCKET, f"t/{path.name}")
    s3.put_object(Bucket=BUCKET, Key="t/mask.safetensors", Body=bytes(8 << 20))
    with pytest.raises(TicketError, match=r"s3://tickets/t/mask.safetensors: more than the \d+ bytes"):
        fetch_ticket(f"s3://{BUCKET}/t", tmp_path / "dest")
    assert not (tmp_path / "dest" / "mask.safetensors").exists()
