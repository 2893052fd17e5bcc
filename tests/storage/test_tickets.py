"""The exported ticket's description and `lth ticket inspect`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lth.api.naming import TICKET_FILE
from lth.storage.tickets import TicketError, describe, inspect
from tests.serving import serving


def write_ticket(directory: Path) -> Path:
    """A small exported ticket in `directory`, written without torch: mask (9 of 26 kept), rewind."""
    directory.mkdir(parents=True, exist_ok=True)
    mask = {"conv.weight": np.zeros((4, 5), dtype=bool), "fc.weight": np.ones((2, 3), dtype=bool)}
    mask["conv.weight"][0, :3] = True
    save_file(mask, str(directory / "mask.safetensors"))
    save_file({"conv.weight": np.ones((4, 5), np.float32)}, str(directory / "rewind.safetensors"))
    info = describe(directory, {"run": "r", "level": 3, "architecture": "smallcnn", "numClasses": 10})
    (directory / TICKET_FILE).write_text(json.dumps(info))
    return directory


@pytest.fixture
def ticket(tmp_path: Path) -> Path:
    return write_ticket(tmp_path)


def test_description_counts_each_layer_and_checks_sums(ticket: Path) -> None:
    info = inspect(ticket)
    assert info["layers"]["conv.weight"] == {"kept": 3, "total": 20, "density": 0.15}
    assert info["layers"]["fc.weight"]["density"] == 1.0
    assert info["density"] == pytest.approx(9 / 26)
    assert set(info["files"]) == {"mask.safetensors", "rewind.safetensors"}
    assert (info["architecture"], info["numClasses"]) == ("smallcnn", 10)


def test_a_changed_file_is_refused(ticket: Path) -> None:
    rewind = ticket / "rewind.safetensors"
    rewind.write_bytes(rewind.read_bytes()[:-4] + b"\x00\x00\x00\x40")  # last weight 1.0 -> 2.0
    with pytest.raises(TicketError, match=r"rewind.safetensors: checksum mismatch"):
        inspect(ticket)


def test_a_mask_that_is_not_boolean_is_refused(tmp_path: Path) -> None:
    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "mask.safetensors"))
    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "rewind.safetensors"))
    with pytest.raises(TicketError, match=r"mask.safetensors: w is F32"):
        describe(tmp_path, {})


def test_lth_ticket_inspect_prints_layers_or_names_the_bad_file(ticket: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "lth", "ticket", "inspect", str(ticket)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "density 34.62%" in ok.stdout and "conv.weight" in ok.stdout
    (ticket / "mask.safetensors").unlink()
    bad = subprocess.run(
        [sys.executable, "-m", "lth", "ticket", "inspect", str(ticket)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "mask.safetensors: listed in ticket.json but missing" in bad.stderr


def test_a_ticket_is_downloaded_with_its_checksums_checked(ticket: Path, tmp_path: Path) -> None:
    from lth.storage.fetch import download

    with serving(ticket) as url:
        fetched = download(url, tmp_path / "fetched")
        assert inspect(fetched) == inspect(ticket)

        mask = ticket / "mask.safetensors"
        data = mask.read_bytes()
        mask.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # changed after ticket.json was written
        again = tmp_path / "again"
        with pytest.raises(TicketError, match=r"mask.safetensors: checksum mismatch"):
            download(url, again)
        assert not any(again.iterdir())  # nothing half-written is left to be mistaken for a ticket

        with pytest.raises(TicketError, match=r"/missing/ticket.json: cannot download \(HTTP Error 404"):
            download(url + "missing", tmp_path / "none")
