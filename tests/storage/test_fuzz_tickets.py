"""Fuzzing ticket.json reading: any bytes, any JSON, any change to a real description gives the
description or one TicketError line naming the file, never a traceback; what is accepted names
only the ticket format's own files (issue 23)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lth.api.naming import TICKET_FILE
from lth.storage.tickets import TICKET_FILES, TicketError, inspect, read_description
from tests.api.test_fuzz_specs import JSON
from tests.storage.test_tickets import write_ticket

WHERE = "https://tickets.example/t/ticket.json"


def _description() -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return json.loads((write_ticket(Path(folder)) / TICKET_FILE).read_text())  # type: ignore[no-any-return]


VALID = _description()


def _read(data: bytes) -> dict[str, Any] | None:
    try:
        info = read_description(data, WHERE)
    except TicketError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{WHERE}: ")
        return None
    assert set(info["files"]) <= set(TICKET_FILES)
    return info


@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=300)
def test_any_bytes_or_json_are_a_description_or_one_line(data: bytes) -> None:
    _read(data)


@st.composite
def changed(draw: st.DrawFn) -> dict[str, Any]:
    """The description of a real ticket with a few values replaced or added, files included."""
    info = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "files", "file", "layers"]))
        value = draw(JSON)
        if where == "top":
            info[draw(st.sampled_from([*info, "x"]))] = value
        elif where == "files" and isinstance(info.get("files"), dict):
            info["files"][draw(st.sampled_from([*TICKET_FILES, "../x", ".bashrc", ""]))] = value
        elif where == "file" and isinstance(info.get("files"), dict) and info["files"]:
            entry = info["files"].get(draw(st.sampled_from(sorted(info["files"]))))
            if isinstance(entry, dict):
                entry[draw(st.sampled_from(["sha256", "bytes", "x"]))] = value
        elif isinstance(info.get("layers"), dict):
            info["layers"][draw(st.text(max_size=5))] = value
    return info


@given(changed())
@settings(max_examples=400)
def test_any_change_to_a_real_description_is_read_or_refused_in_one_line(info: dict[str, Any]) -> None:
    _read(json.dumps(info).encode())


@given(changed())
@settings(max_examples=100)
def test_inspect_of_a_changed_ticket_is_a_description_or_one_line(
    tmp_path_factory: Any, info: dict[str, Any]
) -> None:
    ticket = write_ticket(Path(tmp_path_factory.mktemp("ticket")))
    (ticket / TICKET_FILE).write_text(json.dumps(info))
    try:
        inspect(ticket)
    except TicketError as error:
        assert "\n" not in str(error) and str(ticket) in str(error)
