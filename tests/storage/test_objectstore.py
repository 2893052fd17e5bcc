"""Exported tickets in S3-compatible object storage, against a real S3 server on 127.0.0.1 (moto)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from lth.storage.fetch import download
from lth.storage.objectstore import fetch_ticket, upload_ticket
from lth.storage.tickets import TicketError, inspect
from tests.s3 import BUCKET
from tests.storage.test_tickets import write_ticket

TENSORS = ("mask.safetensors", "rewind.safetensors", "final.safetensors")
EXPORTED = {*TENSORS, "ticket.json", "spec.json", "README.md", "accuracy.png"}
"""Every file of runs/<name>/ticket/."""


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """runs/<name>/ticket/ as `lth report` writes it: tensors, ticket.json, spec, card, plot."""
    ticket = tmp_path / "exported"
    ticket.mkdir()
    save_file({"conv.weight": np.full((4, 5), 0.5, np.float32)}, str(ticket / "final.safetensors"))
    write_ticket(ticket)
    (ticket / "spec.json").write_text('{"model": {"architecture": "smallcnn"}}\n')
    (ticket / "README.md").write_text("# Ticket of run r\n\n![accuracy vs density](accuracy.png)\n")
    (ticket / "accuracy.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return ticket


def keys(client: Any, prefix: str = "") -> set[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"] for item in listed}


def test_an_uploaded_ticket_comes_back_byte_for_byte(s3: Any, exported: Path, tmp_path: Path) -> None:
    urls = upload_ticket(exported, "s3://tickets/exports/cifar-r/")
    assert {url.rsplit("/", 1)[1] for url in urls} == EXPORTED
    assert urls[-1] == "s3://tickets/exports/cifar-r/ticket.json"  # the description goes up last
    assert keys(s3) == {f"exports/cifar-r/{name}" for name in EXPORTED}

    # The trainer's spec.ticket.url path: lth.storage.fetch.download hands s3:// to the object store.
    fetched = download("s3://tickets/exports/cifar-r", tmp_path / "fetched")
    assert {path.name for path in fetched.iterdir()} == EXPORTED
    for name in EXPORTED:
        assert (fetched / name).read_bytes() == (exported / name).read_bytes(), name
    assert inspect(fetched)["files"].keys() == set(TENSORS)  # each checked against ticket.json

    assert upload_ticket(exported, "s3://tickets/exports/cifar-r") == urls  # again: the same objects
    assert keys(s3) == {f"exports/cifar-r/{name}" for name in EXPORTED}


def test_a_changed_object_is_refused_and_nothing_is_kept(s3: Any, exported: Path, tmp_path: Path) -> None:
    upload_ticket(exported, "s3://tickets/r")
    mask = bytearray((exported / "mask.safetensors").read_bytes())
    mask[-1] ^= 1  # one weight of the mask flipped after the export
    s3.put_object(Bucket=BUCKET, Key="r/mask.safetensors", Body=bytes(mask))

    dest = tmp_path / "dest"
    with pytest.raises(TicketError) as refused:
        fetch_ticket("s3://tickets/r", dest)
    assert str(refused.value) == (
        "s3://tickets/r/mask.safetensors: checksum mismatch with ticket.json, the object changed"
    )
    assert list(dest.iterdir()) == []  # no mask, no temporary, no ticket.json to mistake for a ticket


def test_a_second_fetch_gets_only_what_is_missing_or_wrong(s3: Any, exported: Path, tmp_path: Path) -> None:
    upload_ticket(exported, "s3://tickets/r")
    dest = fetch_ticket("s3://tickets/r", tmp_path / "dest")
    (dest / "mask.safetensors").unlink()
    (dest / "final.safetensors").write_bytes(b"half a file")
    s3.delete_object(Bucket=BUCKET, Key="r/rewind.safetensors")  # verified here: not fetched again

    fetch_ticket("s3://tickets/r", dest)
    for name in TENSORS:
        assert (dest / name).read_bytes() == (exported / name).read_bytes(), name
    assert inspect(dest) == inspect(exported)


def test_a_corrupt_ticket_is_not_uploaded(s3: Any, exported: Path) -> None:
    (exported / "rewind.safetensors").write_bytes(b"changed after the export")
    with pytest.raises(TicketError, match=r"exported/rewind.safetensors: checksum mismatch"):
        upload_ticket(exported, "s3://tickets/r")
    assert keys(s3) == set()


def one_line(error: pytest.ExceptionInfo[TicketError]) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_credentials_name_the_variables(
    s3: Any, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(TicketError) as error:
        upload_ticket(exported, "s3://tickets/r")
    assert one_line(error).startswith("s3://tickets/r/")
    assert "no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in one_line(error)


def test_a_missing_bucket_or_object_is_named(s3: Any, s3_server: str, tmp_path: Path) -> None:
    with pytest.raises(TicketError) as error:
        fetch_ticket("s3://no-such-bucket/r", tmp_path / "a")
    assert one_line(error) == f"s3://no-such-bucket: no such bucket at {s3_server}"
    with pytest.raises(TicketError) as error:
        fetch_ticket("s3://tickets/never-exported", tmp_path / "b")
    assert one_line(error) == "s3://tickets/never-exported/ticket.json: no such object"


def test_an_unreachable_endpoint_is_named(
    s3: Any, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the default retries would only make this slower
    with pytest.raises(TicketError) as error:
        fetch_ticket("s3://tickets/r", tmp_path / "dest", endpoint_url=endpoint)
    assert one_line(error).startswith(f"{endpoint}: cannot reach the S3 endpoint (")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(TicketError, match=rf"^{endpoint}: cannot reach the S3 endpoint"):
        upload_ticket(exported, "s3://tickets/r")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://tickets/r", "not an s3:// URL (s3://BUCKET/PREFIX)"),
        ("s3://Tickets_2024/r", "'Tickets_2024' is not a bucket name"),
        ("s3:///r", "'' is not a bucket name"),
        ("s3://tickets/a/../b", "the prefix has empty, '.' or '..' parts"),
    ],
)
def test_a_malformed_url_is_refused_before_any_request(url: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(TicketError) as error:
        fetch_ticket(url, tmp_path / "dest")
    assert one_line(error).startswith(f"{url}: {problem}")
    assert not (tmp_path / "dest").exists()


def lth(*args: str) -> subprocess.CompletedProcess[str]:
    """`lth ...` with this test's environment (credentials, endpoint)."""
    return subprocess.run([sys.executable, "-m", "lth", *args], capture_output=True, text=True, timeout=60)


def test_lth_ticket_upload_fetch_and_inspect(
    s3: Any, s3_server: str, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the flag names the endpoint instead
    uploaded = lth("ticket", "upload", str(exported), "s3://tickets/runs/r", "--endpoint-url", s3_server)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "s3://tickets/runs/r/ticket.json" in uploaded.stdout
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)

    dest = tmp_path / "fetched"
    fetched = lth("ticket", "fetch", "s3://tickets/runs/r", str(dest))
    assert fetched.returncode == 0, fetched.stderr
    for name in TENSORS:
        assert f"  {name}: sha256 " in fetched.stdout
    for name in EXPORTED:
        assert (dest / name).read_bytes() == (exported / name).read_bytes(), name

    inspected = lth("ticket", "inspect", "s3://tickets/runs/r")
    assert inspected.returncode == 0, inspected.stderr
    assert "density 34.62%" in inspected.stdout and "conv.weight" in inspected.stdout

    missing = lth("ticket", "fetch", "s3://tickets/runs/other", str(tmp_path / "other"))
    assert missing.returncode == 1
    assert missing.stderr == "lth ticket fetch: s3://tickets/runs/other/ticket.json: no such object\n"
