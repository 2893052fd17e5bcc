"""The two kinds of Spark task, as plain functions: process one unit of input, write one shard.

A *unit* is a slice of the input that one task streams: an inner tar of the
ImageNet train archive (one class), or a list of members at known byte ranges
(val/test tars, image-folder files). A task writes the unit's output JPEGs into
one blob plus a JSON sidecar under `<out>/.work/`; the sidecar is written last,
so a unit with a sidecar is done and a rerun skips it. Shards are then packed
from the blobs in a deterministic order, each written to a temp file and renamed.
"""

from __future__ import annotations

import io
import json
import resource
import tarfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

import numpy as np
import numpy.typing as npt

from lth.storage.files import atomic_write, atomic_write_bytes, sha256
from lth_spark.images import Geometry, UnreadableImage, process_image

TEST_LABEL = -1
"""The `.cls` of the unlabeled test split."""


def key_of(member_path: str) -> str:
    """WebDataset key of an input path: no extension, no dots (WebDataset splits names at the first dot)."""
    return str(PurePosixPath(member_path).with_suffix("")).replace(".", "_")


@dataclass(frozen=True)
class Member:
    """One input file: `size` bytes at `offset` of `path` (a tar, or the file itself at offset 0)."""

    path: str
    offset: int
    size: int
    key: str
    label: int
    source: str


@dataclass(frozen=True)
class Unit:
    """What one task reads: the tar at [offset, offset + length) of `tar_path` streamed, or `members`."""

    split: str
    name: str
    source: str
    input_bytes: int
    tar_path: str | None = None
    tar_offset: int = 0
    tar_length: int = 0
    label: int = 0
    members: tuple[Member, ...] = field(default=())


@dataclass(frozen=True)
class Processing:
    geometry: Geometry
    quality: int


class _Window(io.RawIOBase):
    """A read-only view of [offset, offset + length) of a file, for tarfile's stream mode."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        file.seek(offset)
        self._file, self._left = file, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        n = self._file.readinto(view)  # type: ignore[attr-defined]
        self._left -= n
        return int(n)


def open_file_budget() -> int:
    """How many files a task may hold open: the soft limit raised to the hard one, halved for
    everything else the process opens. A train shard reads from every class's blob (1,000 at
    ImageNet), more than a common soft limit of 1,024 leaves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(8, soft // 2)


class _OpenFiles:
    """Files opened for reading, at most `limit` at once (the least recently used is closed
    first), all closed at the end."""

    def __init__(self, limit: int | None = None) -> None:
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()
        self.limit = limit or open_file_budget()

    def get(self, path: str) -> BinaryIO:
        file = self._files.get(path)
        if file is not None:
            self._files.move_to_end(path)
            return file
        if len(self._files) >= self.limit:
            self._files.popitem(last=False)[1].close()
        file = self._files[path] = open(path, "rb")  # noqa: SIM115 (closed by close())
        return file

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> _OpenFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unit_inputs(unit: Unit) -> Iterator[tuple[str, int, str, bytes]]:
    """(key, label, source, bytes) of every file of a unit, streamed."""
    if unit.tar_path is not None:
        with open(unit.tar_path, "rb") as archive:
            window = io.BufferedReader(_Window(archive, unit.tar_offset, unit.tar_length), 1 << 20)
            with tarfile.open(fileobj=window, mode="r|") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    data = tar.extractfile(info)
                    assert data is not None  # a regular file
                    yield key_of(info.name), unit.label, f"{unit.source}:{info.name}", data.read()
        return
    with _OpenFiles() as files:
        for member in unit.members:
            file = files.get(member.path)
            file.seek(member.offset)
            yield member.key, member.label, member.source, file.read(member.size)


def unit_paths(work_dir: str, unit_name: str) -> tuple[Path, Path]:
    """The blob of output JPEGs and the sidecar JSON that marks the unit done."""
    base = Path(work_dir) / unit_name
    return base.with_suffix(".bin"), base.with_suffix(".json")


def process_unit(unit: Unit, processing: Processing, work_dir: str) -> dict[str, Any]:
    """Process every image of a unit into its blob, write the sidecar last; return a summary.

    The summary leaves out the per-image records, so the driver does not hold them twice.
    """
    blob_path, sidecar_path = unit_paths(work_dir, unit.name)
    started = time.perf_counter()
    records: list[list[Any]] = []
    skipped: list[list[str]] = []
    histogram = np.zeros(768, dtype=np.int64)

    def write_blob(temp: Path) -> None:
        nonlocal histogram
        with open(temp, "wb") as blob:
            for key, label, source, data in _unit_inputs(unit):
                try:
                    out = process_image(data, processing.geometry, processing.quality)
                except UnreadableImage as error:
                    skipped.append([source, str(error)])
                    continue
                records.append([key, label, blob.tell(), len(out.jpeg), source])
                blob.write(out.jpeg)
                histogram += np.asarray(out.histogram, dtype=np.int64)

    atomic_write(blob_path, write_blob)
    sidecar = {
        "unit": unit.name,
        "split": unit.split,
        "records": records,
        "skipped": skipped,
        "histogram": histogram.tolist(),
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    atomic_write_bytes(sidecar_path, json.dumps(sidecar).encode())
    return {
        "unit": unit.name,
        "images": len(records),
        "skipped": len(skipped),
        "seconds": sidecar["seconds"],
        "peak_rss_bytes": sidecar["peak_rss_bytes"],
    }


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its records are in `records`, an .npz under the work folder (see
    `save_shard_records`), so neither the driver's JVM nor a task's pickle carries one object
    per image."""

    split: str
    path: str
    records: str
    images: int


def save_shard_records(
    path: Path,
    keys: npt.NDArray[np.bytes_],
    labels: npt.NDArray[np.int64],
    blobs: Sequence[str],
    blob: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
) -> None:
    """The records of one shard in its order: UTF-8 key, label, blob (an index into `blobs`),
    offset and size of the JPEG in that blob."""
    arrays = {
        "keys": keys,
        "labels": labels,
        "blobs": np.array(list(blobs), dtype=np.str_),
        "blob": blob,
        "offsets": offsets,
        "sizes": sizes,
    }

    def write(temp: Path) -> None:
        with temp.open("wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def _shard_records(path: str) -> Iterator[tuple[str, int, str, int, int]]:
    """(key, label, blob path, offset, size) of each record of a shard, in its order."""
    with np.load(path, allow_pickle=False) as saved:
        keys, labels, blob = saved["keys"], saved["labels"], saved["blob"]
        blobs, offsets, sizes = [str(b) for b in saved["blobs"]], saved["offsets"], saved["sizes"]
    for key, label, b, offset, size in zip(
        keys.tolist(), labels.tolist(), blob.tolist(), offsets.tolist(), sizes.tolist(), strict=True
    ):
        yield key.decode(), label, blobs[b], offset, size


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """Fixed metadata, so the same images give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_entry_bytes(size: int) -> int:
    """Bytes one member takes in a tar: a header block plus the data rounded up to blocks."""
    return tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_shard(plan: ShardPlan, open_files: int | None = None) -> dict[str, Any]:
    """Write one shard (temp + rename) unless it exists; return its size and checksum."""
    path = Path(plan.path)

    def write_tar(temp: Path) -> None:
        with _OpenFiles(open_files) as blobs, tarfile.open(temp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, label, blob_path, offset, size in _shard_records(plan.records):
                blob = blobs.get(blob_path)
                blob.seek(offset)
                jpeg = blob.read(size)
                tar.addfile(_tar_info(f"{key}.jpg", len(jpeg)), io.BytesIO(jpeg))
                text = str(label).encode()
                tar.addfile(_tar_info(f"{key}.cls", len(text)), io.BytesIO(text))

    if not path.exists():
        atomic_write(path, write_tar)
    return {
        "split": plan.split,
        "path": path.name,
        "images": plan.images,
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    }
