"""Fixtures of the Spark job's tests: one local[2] session, tiny archives with every kind of bad file."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from lth.api import DatasetSpec, PreprocessingSpec
from lth.api.data_manifest import DataManifest
from lth_spark.demo import Layout, add_bad_files, rgb_jpeg, write_layout
from lth_spark.job import Job, Mapper, run
from lth_spark.spark import SparkMapper, session

COLORS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
"""Class c's images are mostly COLORS[c], so a wrong label is visible in the pixels."""
WNIDS = ["n01000000", "n02000000", "n03000000"]
TRAIN_PER_CLASS = 6
VAL_PER_CLASS = 2
TEST_IMAGES = 3
SHARD_BYTES = 16 << 10
"""About 8 images of 16 x 16 per shard, so every split has several or one."""


def colored(label: int, seed: int, shape: tuple[int, int] = (36, 48)) -> np.ndarray[Any, np.dtype[np.uint8]]:
    noise = np.random.default_rng(seed).normal(0, 12, (*shape, 3))
    return (np.array(COLORS[label], dtype=np.float64) + noise).clip(0, 255).astype(np.uint8)


def tiny_layout(bad_files: bool = True) -> Layout:
    layout = Layout(list(WNIDS), ["red", "green", "blue"])
    for label, wnid in enumerate(WNIDS):
        layout.train[label] = [
            (f"{wnid}_{i}.JPEG", rgb_jpeg(colored(label, 100 * label + i))) for i in range(TRAIN_PER_CLASS)
        ]
    order = [2, 0, 1, 1, 2, 0]  # val files in mixed class order, as in ImageNet
    layout.val = [(label, rgb_jpeg(colored(label, 1000 + n))) for n, label in enumerate(order)]
    layout.test = [rgb_jpeg(colored(n % 3, 2000 + n)) for n in range(TEST_IMAGES)]
    if bad_files:
        add_bad_files(layout, colored(0, 7, (24, 40)))
    return layout


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    spark = session("local[2]", app_name="lth-tests")
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def mapper(spark: SparkSession) -> Mapper:
    return SparkMapper(spark.sparkContext)


@pytest.fixture(scope="session")
def imagenet_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_layout(tiny_layout(), root)
    return root


def imagenet_job(input: Path, output: Path, **dataset: Any) -> Job:
    return Job(
        input,
        output,
        DatasetSpec(path=str(input), image_size=16, **dataset),
        PreprocessingSpec(),
        shard_bytes=SHARD_BYTES,
    )


@pytest.fixture(scope="session")
def reference(
    imagenet_input: Path, mapper: Mapper, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DataManifest]:
    """One uninterrupted run: the output every other run of the same input must reproduce."""
    output = tmp_path_factory.mktemp("reference") / "data"
    return output, run(imagenet_job(imagenet_input, output), lambda: mapper)


def read_shard(path: Path) -> list[tuple[str, bytes, int]]:
    """(key, jpeg, label) in shard order."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    keys = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in members))
    return [(k, members[f"{k}.jpg"], int(members[f"{k}.cls"])) for k in keys]
