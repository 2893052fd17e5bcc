"""An exported ticket on disk: its files, and its description `ticket.json`, readable without this project.

The mask and rewind weights are safetensors files; this module reads their headers (and the
mask's bytes) with the standard library only, so the control plane still needs no torch:
per-layer density from the mask, a SHA-256 per file, and what the ticket came from."""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lth.api.naming import FINAL_FILE, MASK_FILE, REWIND_FILE, TICKET_FILE, RunLayout
from lth.api.observed import ObservedSource
from lth.api.validation import problems_from_error
from lth.storage.files import sha256

TICKET_FORMAT = "lth.dev/ticket-v1"
TICKET_FILES = (MASK_FILE, REWIND_FILE, FINAL_FILE)
"""The only files a ticket.json may list: nothing else is fetched, hashed or written."""
REQUIRED_FILES = (MASK_FILE, REWIND_FILE)
MAX_DESCRIPTION_BYTES = 16 << 20
"""ticket.json is a few KB (a ResNet-50's is under 100 KB); larger is not a ticket description."""


class TicketError(Exception):
    """A ticket directory that is incomplete, corrupt or not a ticket; the message names the file."""


class _Listed(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class _Layer(BaseModel):
    model_config = ConfigDict(extra="allow")
    kept: int = Field(ge=0, strict=True)
    total: int = Field(ge=0, strict=True)
    density: float = Field(ge=0, le=1)


class _Description(BaseModel):
    """What readers of ticket.json rely on (the rest is kept as written)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["lth.dev/ticket-v1"]
    files: dict[Literal["mask.safetensors", "rewind.safetensors", "final.safetensors"], _Listed]
    density: float = Field(ge=0, le=1)
    layers: dict[str, _Layer]
    architecture: str | None = None

    @model_validator(mode="after")
    def _required_files(self) -> _Description:
        missing = [name for name in REQUIRED_FILES if name not in self.files]
        if missing:
            raise ValueError(f"files lists no {' and no '.join(missing)}: not a whole ticket")
        return self


def read_description(data: bytes, where: str) -> dict[str, Any]:
    """ticket.json's content, checked: its format, a checksum and size for each file it lists,
    only the ticket format's own file names (mask, rewind and final weights); else a one-line
    TicketError naming `where` and the field."""
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise TicketError(f"{where}: {len(data)} bytes, more than a ticket description holds")
    try:
        info = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise TicketError(f"{where}: not a ticket description (not JSON: {error})") from None
    if not isinstance(info, dict):
        raise TicketError(f"{where}: not a ticket description (a JSON object with format {TICKET_FORMAT})")
    try:
        _Description.model_validate(info)
    except ValidationError as error:
        problem = problems_from_error(error, "")[0]
        raise TicketError(f"{where}: not a ticket description: {problem}") from None
    return info


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
    """ticket.json, with every file's size and checksum verified."""
    described = ticket / TICKET_FILE
    if not ticket.is_dir():
        raise TicketError(f"{ticket}: no such ticket directory")
    try:
        if described.stat().st_size > MAX_DESCRIPTION_BYTES:
            raise TicketError(f"{described}: larger than a ticket description holds")
        info = read_description(described.read_bytes(), str(described))
        for name, expected in info["files"].items():
            _verify(ticket / name, expected)
    except OSError as error:
        raise TicketError(f"{described}: unreadable ({error.strerror or error})") from None
    return info


def _verify(path: Path, expected: dict[str, Any]) -> None:
    """A listed file that is a regular file (a FIFO would block the reader) of the declared size
    and SHA-256."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TicketError(f"{path}: listed in {TICKET_FILE} but missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise TicketError(f"{path}: not a regular file")
    if info.st_size != expected["bytes"]:
        raise TicketError(
            f"{path}: checksum mismatch ({info.st_size} bytes, {TICKET_FILE} says {expected['bytes']}), "
            "the file changed since the ticket was exported"
        )
    if sha256(path) != expected["sha256"]:
        raise TicketError(f"{path}: checksum mismatch, the file changed since the ticket was exported")


def observe_directory(ticket: Path) -> ObservedSource:
    """A ticket directory as the planner wants to know it: missing, unreadable, or described."""
    if not ticket.is_dir():
        return ObservedSource(found=False)
    try:
        return ObservedSource(found=True, description=inspect(ticket))
    except TicketError as error:
        return ObservedSource(found=True, problem=str(error))
