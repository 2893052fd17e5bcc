"""The two kinds of Spark task, as plain functions: process one unit of input, write one shard.

A *unit* is a slice of the input that one task streams: an inner tar of the
ImageNet train archive (one class), or a list of members at known byte ranges
(val/test tars, image-folder files). A task writes the unit's output JPEGs into
one blob plus a JSON sidecar under `<out>/.work/`; the sidecar is written last,
so a unit with a sidecar is done and a rerun skips it. Both files are named after the
unit's fingerprint (what it reads, and the size and age of its archive), so a rerun on
changed input redoes the unit. Shards are then packed from the blobs in a deterministic
order, each written to a temp file and renamed.

A unit is read whole or not at all: an inner tar is walked to its end-of-archive marker
(`lth_spark.tars`), a member must yield the bytes the index promised, and a class must
hold as many files as the devkit says. A damaged unit writes nothing and its task returns
`damaged` with the reason, which fails the job; files over the caps of `lth_spark.limits`
(sparse members, links, files too large to be an image within the pixel cap, headers that
declare too many pixels) are passed by unread and listed as skipped.
"""

from __future__ import annotations

import io
import json
import os
import resource
import stat
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
from lth_spark.limits import max_file_bytes, refuse_oversized
from lth_spark.tars import BadArchive, TarReader

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
    expected_files: int | None = None
    """Files the unit must hold (a class tar: the devkit's num_train_images), when known."""
    fingerprint: str = ""
    """What the unit reads and the state of its archive (`lth_spark.inputs`), in its file names."""

    @property
    def work_name(self) -> str:
        """The stem of its blob and sidecar: a changed input makes another one."""
        return f"{self.name}-{self.fingerprint}" if self.fingerprint else self.name


@dataclass(frozen=True)
class Processing:
    geometry: Geometry
    quality: int
    max_pixels: int
    """spec.dataset.maxImagePixels: larger images are skipped, never decoded."""

    @property
    def max_file_bytes(self) -> int:
        return max_file_bytes(self.max_pixels)


class Window(io.RawIOBase):
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
        file = self._files[path] = _open_regular(path)
        return file

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> _OpenFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Input:
    """One file of a unit: its bytes, or why it was passed by unread."""

    __slots__ = ("data", "key", "label", "skipped", "source")

    def __init__(self, key: str, label: int, source: str, data: bytes = b"", skipped: str = "") -> None:
        self.key, self.label, self.source, self.data, self.skipped = key, label, source, data, skipped


def _open_regular(path: str) -> BinaryIO:
    """A file for reading that is a regular file: a FIFO or device planted in the input must not
    block the task or stream forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadArchive(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def _tar_inputs(unit: Unit, cap: int) -> Iterator[Input]:
    """Every member of a unit's tar, walked to its end-of-archive marker."""
    assert unit.tar_path is not None
    with _open_regular(unit.tar_path) as archive:
        window = io.BufferedReader(Window(archive, unit.tar_offset, unit.tar_length), 1 << 20)
        reader = TarReader(window, unit.source, unit.tar_length)
        for info in reader:
            source = f"{unit.source}:{info.name}"
            if info.kind == "directory":
                continue
            if info.kind != "file":
                yield Input(key_of(info.name), unit.label, source, skipped=info.why_not_a_file)
            elif info.size > cap:
                yield Input(key_of(info.name), unit.label, source, skipped=_too_large(info.size, cap))
            else:
                yield Input(key_of(info.name), unit.label, source, reader.read(info))


def _too_large(size: int, cap: int) -> str:
    return f"{size} bytes, more than the {cap} an image within spec.dataset.maxImagePixels takes: not read"


def _unit_inputs(unit: Unit, cap: int) -> Iterator[Input]:
    """Every file of a unit, streamed; files over `cap` bytes are passed by unread."""
    if unit.tar_path is not None:
        yield from _tar_inputs(unit, cap)
        return
    with _OpenFiles() as files:
        for member in unit.members:
            if member.size > cap:
                yield Input(member.key, member.label, member.source, skipped=_too_large(member.size, cap))
                continue
            file = files.get(member.path)
            file.seek(member.offset)
            data = file.read(member.size)
            if len(data) != member.size:
                raise BadArchive(
                    f"{member.source}: {len(data)} bytes where the index found {member.size} "
                    "(the input changed or is cut short)"
                )
            yield Input(member.key, member.label, member.source, data)


def unit_paths(work_dir: str, work_name: str) -> tuple[Path, Path]:
    """The blob of output JPEGs and the sidecar JSON that marks the unit done (its `work_name`:
    a class id may hold dots, so the suffix is added, never substituted)."""
    base = Path(work_dir)
    return base / f"{work_name}.bin", base / f"{work_name}.json"


def _processed(item: Input, processing: Processing) -> Any:
    """The output of one input file, or the reason it is skipped."""
    if item.skipped:
        return item.skipped
    try:
        refuse_oversized(item.data, processing.max_pixels)
        return process_image(item.data, processing.geometry, processing.quality)
    except UnreadableImage as error:
        return str(error)
    except MemoryError:
        return "out of memory while decoding it"


def process_unit(unit: Unit, processing: Processing, work_dir: str) -> dict[str, Any]:
    """Process every image of a unit into its blob, write the sidecar last; return a summary.

    The summary leaves out the per-image records, so the driver does not hold them twice. A
    damaged unit writes nothing: its summary says `damaged` and why.
    """
    blob_path, sidecar_path = unit_paths(work_dir, unit.work_name)
    started = time.perf_counter()
    records: list[list[Any]] = []
    skipped: list[list[str]] = []
    histogram = np.zeros(768, dtype=np.int64)

    def write_blob(temp: Path) -> None:
        nonlocal histogram
        with open(temp, "wb") as blob:
            for item in _unit_inputs(unit, processing.max_file_bytes):
                out = _processed(item, processing)
                if isinstance(out, str):
                    skipped.append([item.source, out])
                    continue
                records.append([item.key, item.label, blob.tell(), len(out.jpeg), item.source])
                blob.write(out.jpeg)
                histogram += np.asarray(out.histogram, dtype=np.int64)
            files = len(records) + len(skipped)
            if unit.expected_files is not None and files != unit.expected_files:
                raise BadArchive(
                    f"{unit.source}: holds {files} files, the devkit says {unit.expected_files} "
                    "(num_train_images in meta.mat): the archive is incomplete or not this data set"
                )

    try:
        atomic_write(blob_path, write_blob)
    except BadArchive as error:
        return {"unit": unit.name, "images": 0, "skipped": 0, "damaged": str(error)}
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
