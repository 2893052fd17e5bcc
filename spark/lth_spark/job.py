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
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import simplejpeg

from lth.api import DatasetSpec, PreprocessingSpec
from lth.data_manifest import DataManifest, ShardInfo, SkippedFile, SplitInfo
from lth.files import atomic_write_bytes
from lth.naming import MANIFEST_FILE
from lth_spark.images import Geometry
from lth_spark.inputs import InputError, plan_input
from lth_spark.work import (
    Processing,
    ShardPlan,
    ShardRecord,
    process_unit,
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
        d = self.dataset
        short_side = d.crop_short_side if d.resize == "center-crop" else 0
        return Processing(Geometry(d.image_size, d.resize, short_side), self.preprocessing.jpeg_quality)

    def parameters(self) -> dict[str, Any]:
        """Everything that decides the output bytes; a rerun must match the unfinished run's."""
        d = self.dataset
        return {
            "format": d.format,
            "image_size": d.image_size,
            "resize": d.resize,
            "short_side": d.crop_short_side if d.resize == "center-crop" else None,
            "classes": d.classes,
            "jpeg_quality": self.preprocessing.jpeg_quality,
            "shard_bytes": self.target_shard_bytes,
            "train_order": "blake2b-64 of the key",
            "pillow": PIL.__version__,
            "simplejpeg": simplejpeg.__version__,
        }


def _train_order(key: str) -> bytes:
    """A fixed pseudo-random order, so every train shard mixes all classes."""
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def plan_shards(
    sidecars: list[dict[str, Any]], work_dir: Path, out_dir: Path, shard_bytes: int
) -> list[ShardPlan]:
    """Records of each split in a deterministic order, cut into shards of about shard_bytes."""
    plans: list[ShardPlan] = []
    for split in SPLITS:
        records = [(rec, s["unit"]) for s in sidecars if s["split"] == split for rec in s["records"]]
        if not records:
            continue
        if split == "train":
            records.sort(key=lambda r: (_train_order(r[0][0]), r[0][0]))
        else:
            records.sort(key=lambda r: r[0][0])
        for (a, _), (b, _) in itertools.pairwise(records):
            if a[0] == b[0]:
                raise InputError(f"{b[4]}: same key {b[0]!r} as {a[4]} in the {split} split")
        shards: list[list[ShardRecord]] = [[]]
        size = 0
        for (key, label, offset, length, _source), unit in records:
            entry = tar_entry_bytes(length) + tar_entry_bytes(len(str(label)))
            if shards[-1] and size + entry > shard_bytes:
                shards.append([])
                size = 0
            blob, _ = unit_paths(str(work_dir), unit)
            shards[-1].append(ShardRecord(key, label, blob.as_posix(), offset, length))
            size += entry
        plans += [
            ShardPlan(split, (out_dir / f"{split}-{n:05d}.tar").as_posix(), tuple(shard))
            for n, shard in enumerate(shards)
        ]
    return plans


def _mean_std(histogram: np.ndarray[Any, np.dtype[np.int64]]) -> tuple[list[float], list[float]]:
    counts = histogram.reshape(3, 256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    pixels = counts.sum(axis=1)
    mean = counts @ values / pixels
    std = np.sqrt(np.maximum(counts @ values**2 / pixels - mean**2, 0.0))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def build_manifest(
    job: Job, classes: list[Any], sidecars: list[dict[str, Any]], shards: list[dict[str, Any]]
) -> DataManifest:
    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        labels = [rec[1] for s in sidecars if s["split"] == split for rec in s["records"]]
        if split == "test":
            if labels:
                splits[split] = SplitInfo(images=len(labels), per_class=[])
            continue
        per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
        splits[split] = SplitInfo(images=len(labels), per_class=[int(n) for n in per_class])
    train_histogram = np.zeros(768, dtype=np.int64)
    for sidecar in sidecars:
        if sidecar["split"] == "train":
            train_histogram += np.asarray(sidecar["histogram"], dtype=np.int64)
    if splits["train"].images == 0:
        raise InputError(f"{job.input}: no training image could be decoded")
    mean, std = _mean_std(train_histogram)
    skipped = sorted(
        (
            SkippedFile(split=s["split"], source=source, reason=reason)
            for s in sidecars
            for source, reason in s["skipped"]
        ),
        key=lambda f: (SPLITS.index(f.split), f.source),
    )
    return DataManifest(
        image_size=job.dataset.image_size,
        classes=classes,
        splits=splits,
        shards=[ShardInfo.model_validate(s) for s in shards],
        skipped=skipped,
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


def run(job: Job, start_mapper: Callable[[], Mapper]) -> DataManifest:
    """Preprocess job.input into shards and manifest.json in job.output; a finished output is left alone.

    The mapper (a Spark session) starts only after the input was checked, so bad input fails in seconds.
    """
    manifest_path = job.output / MANIFEST_FILE
    if manifest_path.exists():
        log.info("%s exists: the data is complete, nothing to do", manifest_path)
        return DataManifest.load(manifest_path)
    plan = plan_input(job.input, job.dataset)
    work = _claim_work_dir(job)
    todo = [u for u in plan.units if not all(p.exists() for p in unit_paths(str(work), u.name))]
    log.info(
        "%d classes, %d units of work (%d already done), %.1f MiB of input",
        len(plan.classes),
        len(plan.units),
        len(plan.units) - len(todo),
        sum(u.input_bytes for u in plan.units) / (1 << 20),
    )
    mapper = start_mapper()
    mapper(partial(process_unit, processing=job.processing, work_dir=str(work)), todo, PROCESS_STEP)
    names = sorted(u.name for u in plan.units)
    sidecars = [json.loads(unit_paths(str(work), name)[1].read_text()) for name in names]
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
