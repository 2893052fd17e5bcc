"""Inputs an attacker or a broken download leaves: archives cut short or damaged, members that
declare far more than they hold, images whose header lies about their size. Each is built here
byte by byte, so the tests need no GNU tar."""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

BLOCK = 512


def tar_of(files: list[tuple[str, bytes]], format: int = tarfile.USTAR_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def without_end(archive: bytes) -> bytes:
    """The archive cut right after its last member's data, on a block boundary: what an
    interrupted download leaves when it stops between two members."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        last = tar.getmembers()[-1]
    return archive[: last.offset_data + -(-last.size // BLOCK) * BLOCK]


def member_offsets(archive: bytes) -> list[tuple[str, int, int]]:
    """(name, header offset, data offset) of each member."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, m.offset, m.offset_data) for m in tar.getmembers()]


def corrupt_header(archive: bytes, index: int) -> bytes:
    """The header of member `index` overwritten with junk: its checksum no longer holds."""
    _, header, _ = member_offsets(archive)[index]
    return archive[:header] + b"\x07" * 100 + archive[header + 100 :]


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def gnu_sparse_member(name: str, declared: int, stored: bytes = b"x" * BLOCK) -> bytes:
    """A GNU sparse member (type 'S') whose one data region is `stored`, at the end of a file of
    `declared` bytes: a few hundred bytes in the archive, `declared` bytes once expanded."""
    header = bytearray(BLOCK)
    header[0 : len(name)] = name.encode()
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)
    header[116:124] = _octal(0, 8)
    header[124:136] = _octal(len(stored), 12)
    header[136:148] = _octal(0, 12)
    header[156:157] = b"S"
    header[257:265] = b"ustar  \0"
    header[386:398] = _octal(declared - len(stored), 12)  # the region's offset in the file
    header[398:410] = _octal(len(stored), 12)  # and its length
    header[483:495] = _octal(declared, 12)  # realsize
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header) + stored + bytes(-len(stored) % BLOCK)


def tar_with(files: list[tuple[str, bytes]], *raw_members: bytes) -> bytes:
    """A tar of `files`, then members given as raw header and data blocks, then the end marker."""
    body = without_end(tar_of(files)) + b"".join(raw_members)
    return body + bytes(2 * BLOCK) + bytes(-(len(body) + 2 * BLOCK) % (20 * BLOCK))


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) declares `width` x `height`."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


MEMORY_LIMIT = 1 << 30
"""The address space a bounded-memory check runs in: far above what the job's code needs (about
150 MB with its imports, 256 MiB more for the largest image it may decode), far below what a
hostile input asks for."""


def run_limited(code: str, limit: int = MEMORY_LIMIT, timeout: float = 120) -> dict[str, Any]:
    """Run `code` (which prints one JSON line last) in a fresh interpreter whose address space
    is capped with setrlimit; its result, or the traceback it died with."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    root = Path(__file__).resolve().parents[2]
    paths = f"{root}:{root / 'spark'}:{root / 'operator'}"
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": paths}
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
