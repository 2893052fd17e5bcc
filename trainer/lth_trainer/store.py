"""Files of a level: atomic writes, and loads that name the file when it is bad.

Every write goes to a temporary file in the same directory and is renamed into
place, so a killed process never leaves a half-written file that looks whole,
and two jobs that write the same file race harmlessly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lth.storage.files import atomic_write, atomic_write_text


class TrainerError(Exception):
    """A problem with the trainer's inputs; the message names the file or field."""


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file (the format a ticket export and other tools read)."""
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write(path, lambda temp: save_file(plain, str(temp)))


def copy_file(source: Path, path: Path) -> None:
    """`source`'s bytes at `path`, atomically (two jobs that copy the same file race harmlessly)."""

    def write(temp: Path) -> None:
        shutil.copyfile(source, temp)

    atomic_write(path, write)


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise TrainerError(f"{path}: {what} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise TrainerError(f"{path}: {what} is unreadable (corrupt or truncated?): {error}") from error


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda temp: torch.save(state, temp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged zip/pickle
        raise TrainerError(f"{path}: checkpoint is unreadable (corrupt or truncated?): {error}") from error
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise TrainerError(f"{path}: not a checkpoint of this trainer (no step/model)")
    return state
