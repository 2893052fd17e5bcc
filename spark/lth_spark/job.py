"""The preprocessing job: plan the input, process the units, pack the shards, write the manifest last.

Where the work runs is a `Mapper` (Spark here; a plain process pool in the
benchmark), so the job is the same code either way. Each step skips what a
killed earlier attempt finished: units with a sidecar, shards that exist.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import PIL
import simplejpeg

from lth.api import DatasetSpec, PreprocessingSpec
from lth.api.data_manifest import (
    DataManifest,
    ShardInfo,
    SkippedFile,
    SplitInfo,
    geometry_mismatch,
    stored_geometry,
)
from lth.api.naming import MANIFEST_FILE
from lth.storage.files import atomic_write_bytes
from lth_spark.images import Geometry
from lth_spark.inputs import InputError, plan_input
from lth_spark.work import (
    Processing,
    ShardPlan,
    process_unit,
    save_shard_records,
    tar_entry_bytes,
    unit_paths,
    write_shard,
)

log = logging.getLogger("lth_spark")

WORK_DIR = ".work"
"""Unit blobs and sidecars of an unfinished job; removed once the manifest is written."""
SPLITS = ("train", "val", "test")
PROCESS_STEP = "decode+resize+encode"
SHARD_STEP = "write shards"

Mapper = Callable[[Callable[[Any], dict[str, Any]], Sequence[Any], str], list[dict[str, Any]]]
"""map(function, items, what) -> results in item order; each result has an "images" count for progress."""


@dataclass(frozen=True)
class Job:
    input: Path
    output: Path
    dataset: DatasetSpec
    preprocessing: PreprocessingSpec
    shard_bytes: int | None = None
    """Target shard size; preprocessing.shard_size_mb MiB when None (tests use a few KB)."""

    @property
    def target_shard_bytes(self) -> int:
        return self.shard_bytes or self.preprocessing.shard_size_mb << 20

    @property
    def processing(self) -> Processing:
        stored = stored_geometry(self.dataset)
        geometry = Geometry(stored.image_size, stored.resize, stored.short_side or 0, stored.max_side or 0)
        return Processing(geometry, self.preprocessing.jpeg_quality, self.dataset.max_image_pixels)

    def parameters(self) -> dict[str, Any]:
        """Everything that decides the output bytes (the stored geometry among them, which the
        trainer checks against its spec); a rerun must match the unfinished run's."""
        d = self.dataset
        return {
            "format": d.format,
            **stored_geometry(d).model_dump(),
            "classes": d.classes,
            "max_image_pixels": d.max_image_pixels,
            "jpeg_quality": self.preprocessing.jpeg_quality,
            "shard_bytes": self.target_shard_bytes,
            "train_order": "blake2b-64 of the key",
            "pillow": PIL.__version__,
            "simplejpeg": simplejpeg.__version__,
            "opencv": cv2.__version__,
        }


def _train_order(key: bytes) -> int:
    """A fixed pseudo-random order, so every train shard mixes all classes."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class SplitRecords:
    """Every image of one split as a row of numpy columns (about 50 bytes an image, so the
    driver holds ImageNet's 1.3 M in ~70 MB rather than 1.3 M Python lists)."""

    keys: npt.NDArray[np.bytes_]
    """UTF-8 keys: their bytewise order is the keys' code point order."""
    labels: npt.NDArray[np.int64]
    unit: npt.NDArray[np.int32]
    """Index of the unit (and so of its blob) in `Sidecars.units`."""
    offsets: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Sidecars:
    """What the driver keeps of the units' sidecars: the records as columns, the skipped files
    and the train histogram."""

    units: list[str]
    splits: dict[str, SplitRecords]
    skipped: list[SkippedFile]
    train_histogram: npt.NDArray[np.int64]


def read_sidecars(work_dir: Path, units: list[str]) -> Sidecars:
    """Read every unit's sidecar, one at a time, into columns per split."""
    columns: dict[str, list[tuple[Any, ...]]] = {split: [] for split in SPLITS}
    skipped: list[SkippedFile] = []
    histogram = np.zeros(768, dtype=np.int64)
    for number, name in enumerate(units):
        sidecar = json.loads(unit_paths(str(work_dir), name)[1].read_text())
        split, records = sidecar["split"], sidecar["records"]
        skipped += [
            SkippedFile(split=split, source=source, reason=reason) for source, reason in sidecar["skipped"]
        ]
        if split == "train":
            histogram += np.asarray(sidecar["histogram"], dtype=np.int64)
        if records:
            columns[split].append(
                (
                    np.array([r[0].encode() for r in records], dtype=np.bytes_),
                    np.array([r[1] for r in records], dtype=np.int64),
                    np.full(len(records), number, dtype=np.int32),
                    np.array([r[2] for r in records], dtype=np.int64),
                    np.array([r[3] for r in records], dtype=np.int64),
                )
            )
    splits = {}
    for split, parts in columns.items():
        if parts:
            splits[split] = SplitRecords(*(np.concatenate(column) for column in zip(*parts, strict=True)))
    skipped.sort(key=lambda f: (SPLITS.index(f.split), f.source))
    return Sidecars(units, splits, skipped, histogram)


def _source_of(work_dir: Path, unit: str, key: bytes) -> str:
    """The input file of a record, read back from its unit's sidecar (for an error message)."""
    sidecar = json.loads(unit_paths(str(work_dir), unit)[1].read_text())
    return next(str(r[4]) for r in sidecar["records"] if r[0].encode() == key)


def _order(split: str, records: SplitRecords) -> npt.NDArray[np.intp]:
    """The split's records in shard order: train by a hash of the key, the others by key."""
    if split != "train":
        return np.argsort(records.keys, kind="stable")
    hashes = np.fromiter(
        (_train_order(k) for k in records.keys.tolist()), dtype=np.uint64, count=len(records)
    )
    return np.lexsort((records.keys, hashes))


LABEL_ENTRY = tar_entry_bytes(1)
"""A `.cls` member: the label as text is never more than one block."""


def plan_shards(sidecars: Sidecars, work_dir: Path, out_dir: Path, shard_bytes: int) -> list[ShardPlan]:
    """Records of each split in a deterministic order, cut into shards of about shard_bytes;
    each shard's records saved under the work folder for its task."""
    plans: list[ShardPlan] = []
    blob_paths = [unit_paths(str(work_dir), name)[0].as_posix() for name in sidecars.units]
    for split in SPLITS:
        records = sidecars.splits.get(split)
        if records is None:
            continue
        order = _order(split, records)
        keys = records.keys[order]
        same = np.flatnonzero(keys[1:] == keys[:-1])
        if same.size:
            first, second = order[same[0]], order[same[0] + 1]
            key = bytes(records.keys[first])
            a = _source_of(work_dir, sidecars.units[records.unit[first]], key)
            b = _source_of(work_dir, sidecars.units[records.unit[second]], key)
            raise InputError(f"{b}: same key {key.decode()!r} as {a} in the {split} split")
        entries = (
            tarfile.BLOCKSIZE
            + -(-records.sizes[order] // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            + LABEL_ENTRY
        )
        cuts, size = [0], 0
        for i, entry in enumerate(entries.tolist()):
            if i > cuts[-1] and size + entry > shard_bytes:
                cuts.append(i)
                size = 0
            size += entry
        cuts.append(len(order))
        for n, (start, end) in enumerate(itertools.pairwise(cuts)):
            rows = order[start:end]
            units, blob = np.unique(records.unit[rows], return_inverse=True)
            plan_path = work_dir / "shards" / f"{split}-{n:05d}.npz"
            save_shard_records(
                plan_path,
                records.keys[rows],
                records.labels[rows],
                [blob_paths[u] for u in units.tolist()],
                blob.astype(np.int32),
                records.offsets[rows],
                records.sizes[rows],
            )
            plans.append(
                ShardPlan(
                    split, (out_dir / f"{split}-{n:05d}.tar").as_posix(), plan_path.as_posix(), len(rows)
                )
            )
    return plans


def _mean_std(histogram: np.ndarray[Any, np.dtype[np.int64]]) -> tuple[list[float], list[float]]:
    counts = histogram.reshape(3, 256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    pixels = counts.sum(axis=1)
    mean = counts @ values / pixels
    std = np.sqrt(np.maximum(counts @ values**2 / pixels - mean**2, 0.0))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def build_manifest(
    job: Job, classes: list[Any], sidecars: Sidecars, shards: list[dict[str, Any]]
) -> DataManifest:
    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        records = sidecars.splits.get(split)
        labels = records.labels if records is not None else np.zeros(0, dtype=np.int64)
        if split == "test":
            if len(labels):
                splits[split] = SplitInfo(images=len(labels), per_class=[])
            continue
        per_class = np.bincount(labels, minlength=len(classes))
        splits[split] = SplitInfo(images=len(labels), per_class=[int(n) for n in per_class])
    if splits["train"].images == 0:
        raise InputError(f"{job.input}: no training image could be decoded")
    mean, std = _mean_std(sidecars.train_histogram)
    return DataManifest(
        image_size=stored_geometry(job.dataset).image_size,
        classes=classes,
        splits=splits,
        shards=[ShardInfo.model_validate(s) for s in shards],
        skipped=sidecars.skipped,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        parameters=job.parameters(),
    )


def _claim_work_dir(job: Job) -> Path:
    """The work folder, refusing one that an unfinished run with other parameters left."""
    work = job.output / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "parameters.json"  # in .work/ only while the job is unfinished
    wanted = json.dumps(job.parameters(), sort_keys=True)
    if marker.exists() and marker.read_text() != wanted:
        raise InputError(
            f"{job.output}: holds an unfinished run with other parameters ({marker}); "
            "remove the folder to start over"
        )
    atomic_write_bytes(marker, wanted.encode())
    return work


def _remove_temp_files(output: Path) -> None:
    """Temp files of shards (or a manifest) that a killed attempt was writing: a rerun rewrites
    those shards, and the finished folder holds exactly what an uninterrupted run leaves."""
    for temp in output.glob(".*.tmp"):
        if SHARD_TEMP.fullmatch(temp.name):
            temp.unlink(missing_ok=True)


SHARD_TEMP = re.compile(rf"\.((train|val|test)-\d{{5}}\.tar|{re.escape(MANIFEST_FILE)})\..+\.tmp")
"""atomic_write's temp name of a shard or of the manifest."""


def _refuse_damaged(results: list[dict[str, Any]]) -> None:
    """A damaged unit fails the job (its task wrote nothing, so a rerun on a repaired input
    redoes it and only it)."""
    damaged = sorted(str(r["damaged"]) for r in results if r.get("damaged"))
    if damaged:
        more = f" (and {len(damaged) - 1} more damaged units)" if len(damaged) > 1 else ""
        raise InputError(damaged[0] + more)


def run(job: Job, start_mapper: Callable[[], Mapper]) -> DataManifest:
    """Preprocess job.input into shards and manifest.json in job.output; a finished output is left alone.

    The mapper (a Spark session) starts only after the input was checked, so bad input fails in seconds.
    """
    manifest_path = job.output / MANIFEST_FILE
    if manifest_path.exists():
        done = DataManifest.load(manifest_path)
        mismatch = geometry_mismatch(job.dataset, done, manifest_path)
        if mismatch:
            raise InputError(f"{mismatch}; remove the folder to start over")
        log.info("%s exists: the data is complete, nothing to do", manifest_path)
        return done
    plan = plan_input(job.input, job.dataset)
    work = _claim_work_dir(job)
    _remove_temp_files(job.output)
    todo = [u for u in plan.units if not all(p.exists() for p in unit_paths(str(work), u.work_name))]
    log.info(
        "%d classes, %d units of work (%d already done), %.1f MiB of input",
        len(plan.classes),
        len(plan.units),
        len(plan.units) - len(todo),
        sum(u.input_bytes for u in plan.units) / (1 << 20),
    )
    mapper = start_mapper()
    results = mapper(partial(process_unit, processing=job.processing, work_dir=str(work)), todo, PROCESS_STEP)
    _refuse_damaged(results)
    sidecars = read_sidecars(work, [u.work_name for u in sorted(plan.units, key=lambda u: u.name)])
    shard_plans = plan_shards(sidecars, work, job.output, job.target_shard_bytes)
    shards = mapper(write_shard, shard_plans, SHARD_STEP)
    manifest = build_manifest(job, plan.classes, sidecars, shards)
    atomic_write_bytes(manifest_path, (manifest.model_dump_json(indent=2) + "\n").encode())
    shutil.rmtree(work)
    log.info(
        "wrote %s: %s, %d shards, %d skipped",
        manifest_path,
        ", ".join(f"{name} {info.images}" for name, info in manifest.splits.items()),
        len(manifest.shards),
        len(manifest.skipped),
    )
    return manifest
