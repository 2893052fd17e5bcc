"""An exported ticket on disk: its files, and its description `ticket.json`, readable without this project.

The mask and rewind weights are safetensors files; this module reads their headers (and the
mask's bytes) with the standard library only, so the control plane still needs no torch:
per-layer density from the mask, a SHA-256 per file, and what the ticket came from."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.api.naming import FINAL_FILE, MASK_FILE, REWIND_FILE, TICKET_FILE, RunLayout
from lth.api.observed import ObservedSource
from lth.storage.files import sha256


class TicketError(Exception):
    """A ticket directory that is incomplete, corrupt or not a ticket; the message names the file."""


@dataclass(frozen=True)
class TicketFiles:
    """Where a ticket's tensors are: an exported ticket directory, or a level of a run."""

    mask: Path
    rewind: Path
    final: Path
    description: Path | None
    """ticket.json (an exported directory), else None."""

    @classmethod
    def from_dir(cls, ticket: Path) -> TicketFiles:
        return cls(ticket / MASK_FILE, ticket / REWIND_FILE, ticket / FINAL_FILE, ticket / TICKET_FILE)

    @classmethod
    def from_run(cls, run_dir: Path, level: int) -> TicketFiles:
        """Level `level` of a run: its mask and final weights, and the run's rewind point."""
        layout = RunLayout(root=run_dir)
        chosen = layout.level(level)
        return cls(chosen.mask, layout.level(0).rewind, chosen.final, None)


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where its data starts."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as error:
        raise TicketError(f"{path}: not a readable safetensors file ({error})") from None
    header.pop("__metadata__", None)
    return header, 8 + length


def mask_densities(path: Path) -> dict[str, dict[str, int]]:
    """Kept and total weights per layer of a boolean mask file."""
    header, start = safetensors_header(path)
    data = path.read_bytes()
    layers = {}
    for name, tensor in sorted(header.items()):
        if tensor["dtype"] != "BOOL":
            raise TicketError(f"{path}: {name} is {tensor['dtype']}, a mask holds BOOL tensors")
        begin, end = tensor["data_offsets"]
        values = data[start + begin : start + end]
        layers[name] = {"kept": len(values) - values.count(0), "total": len(values)}
    return layers


def describe(ticket: Path, source: dict[str, Any]) -> dict[str, Any]:
    """ticket.json's content for the mask, rewind and (if there) final weights in `ticket`."""
    mask, rewind, final = ticket / MASK_FILE, ticket / REWIND_FILE, ticket / FINAL_FILE
    for path in (mask, rewind):
        if not path.is_file():
            raise TicketError(f"{path}: missing from the ticket")
    layers = mask_densities(mask)
    kept = sum(layer["kept"] for layer in layers.values())
    total = sum(layer["total"] for layer in layers.values())
    return {
        "format": "lth.dev/ticket-v1",
        **source,
        "density": kept / total if total else 1.0,
        "layers": {
            name: {**layer, "density": layer["kept"] / layer["total"]} for name, layer in layers.items()
        },
        "files": {
            path.name: {"sha256": sha256(path), "bytes": path.stat().st_size}
            for path in (mask, rewind, final)
            if path.is_file()
        },
    }


def inspect(ticket: Path) -> dict[str, Any]:
    """ticket.json, with every file's checksum verified."""
    described = ticket / TICKET_FILE
    if not ticket.is_dir():
        raise TicketError(f"{ticket}: no such ticket directory")
    try:
        info: dict[str, Any] = json.loads(described.read_text())
    except (OSError, ValueError) as error:
        raise TicketError(f"{described}: unreadable ({error})") from None
    if not isinstance(info, dict) or info.get("format") != "lth.dev/ticket-v1":
        raise TicketError(f"{described}: not a ticket description (format lth.dev/ticket-v1)")
    for name, expected in info.get("files", {}).items():
        path = ticket / name
        if not path.is_file():
            raise TicketError(f"{path}: listed in {TICKET_FILE} but missing")
        if sha256(path) != expected["sha256"]:
            raise TicketError(f"{path}: checksum mismatch, the file changed since the ticket was exported")
    return info


def observe_directory(ticket: Path) -> ObservedSource:
    """A ticket directory as the planner wants to know it: missing, unreadable, or described."""
    if not ticket.is_dir():
        return ObservedSource(found=False)
    try:
        return ObservedSource(found=True, description=inspect(ticket))
    except TicketError as error:
        return ObservedSource(found=True, problem=str(error))
