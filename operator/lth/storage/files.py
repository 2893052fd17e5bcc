"""Writing and reading a run's files: the one atomic writer, checksums, results and status.

Every file of a run directory is written through `atomic_write`: a temporary file
beside the target, fsync'd, renamed into place, and the directory fsync'd, so a process
killed at any point (or a node that loses power) leaves the old file or the whole new
one, never a half-written file that looks whole. The Spark job, the trainer, the local
runner, the report and the ticket download all use it. Standard library and lth.api only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lth.api import LevelResult, RunStatus, StabilityResult


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temp)` to fill a temporary file beside `path`, then make it `path` for good.

    An exception from `write` (a checksum that does not match, say) leaves `path` untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        write(temp)
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        # mkstemp makes 0600; a run directory is shared (umask decides, as for any new file).
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)
        os.replace(temp, path)
        _fsync_directory(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(temp: Path) -> None:
        temp.write_bytes(data)

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_directory(directory: Path) -> None:
    """The rename itself is durable only once its directory is."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename stands
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_result(path: Path) -> LevelResult | None:
    """A level's result.json; None when it is missing or not a result (an unfinished level)."""
    try:
        return LevelResult.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError):
        return None


def read_stability_result(path: Path) -> StabilityResult | None:
    """A job of the instability analysis' result.json; None when missing or not one."""
    try:
        return StabilityResult.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError):
        return None


def read_progress(path: Path) -> list[dict[str, Any]]:
    """A level's progress.jsonl, one record per finished epoch; empty when there is none yet.
    The trainer rewrites it whole, so every line is whole."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


class RunNotReadable(Exception):
    """One line that says why a run's status cannot be read or shown (a status file that is not
    one, a run that is missing, a cluster out of reach, no status yet)."""


def load_status(path: Path) -> RunStatus | None:
    """A local run's status.json; None before the run's first plan."""
    try:
        return RunStatus.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError) as error:
        raise RunNotReadable(f"{path}: unreadable run state ({error}); remove it to start over") from None


class UnreadableDocument(Exception):
    """A YAML file that cannot be read as documents; the message is one line naming it."""


def read_yaml(path: Path) -> list[Any]:
    """The documents of a YAML file (run.yaml, chart values), each a plain value; one line
    naming the file when it cannot be read, is not YAML, or nests too deeply to be a spec."""
    import yaml

    try:
        return list(yaml.safe_load_all(path.read_text()))
    except UnicodeDecodeError as error:  # a ValueError: named before the YAML errors
        raise UnreadableDocument(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise UnreadableDocument(f"{path}: cannot read: {error.strerror or error}") from None
    except (yaml.YAMLError, ValueError, OverflowError) as error:  # a date like 2001-13-01 is a ValueError
        raise UnreadableDocument(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise UnreadableDocument(f"{path}: nested too deeply to be a LotteryTicketRun") from None
