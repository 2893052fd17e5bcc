"""The whole job on real Spark local[2]: counts, labels, sizes, skipped files, resume after a kill."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg

from lth.api import DatasetSpec, PreprocessingSpec
from lth.api.data_manifest import DataManifest
from lth_spark.demo import rgb_jpeg
from lth_spark.inputs import InputError, plan_input
from lth_spark.job import PROCESS_STEP, SHARD_STEP, WORK_DIR, Job, Mapper, run
from lth_spark.work import ShardPlan, save_shard_records, write_shard
from tests.spark.conftest import (
    COLORS,
    SHARD_BYTES,
    TEST_IMAGES,
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
    WNIDS,
    colored,
    imagenet_job,
    read_shard,
)

pytestmark = pytest.mark.slow

CONVERTED = ["cmyk", "png", "gray", "palette", "exif"]


def test_counts_labels_and_skipped_files(reference: tuple[Path, DataManifest]) -> None:
    _, manifest = reference
    assert [c.wnid for c in manifest.classes] == WNIDS
    assert [c.name for c in manifest.classes] == ["red", "green", "blue"]
    assert manifest.splits["train"].per_class == [
        TRAIN_PER_CLASS + len(CONVERTED),
        TRAIN_PER_CLASS,
        TRAIN_PER_CLASS,
    ]
    assert manifest.splits["val"].per_class == [VAL_PER_CLASS] * 3
    assert manifest.splits["test"].images == TEST_IMAGES
    assert [(s.split, s.source.rsplit(":", 1)[1]) for s in manifest.skipped] == [
        ("train", "n01000000_bad_empty.JPEG"),
        ("train", "n01000000_bad_truncated.JPEG"),
        ("val", "ILSVRC2012_val_00000007.JPEG"),
    ]
    assert manifest.skipped[0].reason == "empty file"
    assert "runcated" in manifest.skipped[1].reason


def test_shards_hold_what_the_manifest_says(reference: tuple[Path, DataManifest]) -> None:
    output, manifest = reference
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [s.path for s in manifest.shards] + ["manifest.json"]
    )
    train = [s.path for s in manifest.shards_of("train")]
    assert len(train) > 1 and train == [f"train-{n:05d}.tar" for n in range(len(train))]
    for shard in manifest.shards:
        path = output / shard.path
        assert shard.bytes == path.stat().st_size
        assert shard.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert shard.bytes <= SHARD_BYTES + 10240  # the target plus the tar's end padding
        records = read_shard(path)
        assert len(records) == shard.images
        for key, jpeg, label in records:
            pixels = simplejpeg.decode_jpeg(jpeg)
            assert pixels.shape == (16, 16, 3)
            if shard.split == "test":
                assert label == -1
            elif shard.split == "train":
                assert key.startswith(WNIDS[label])
            if shard.split == "val" or (shard.split == "train" and "bad" not in key):
                # the label's color dominates: val labels came through the devkit's id mapping
                assert int(np.argmax(pixels.reshape(-1, 3).mean(axis=0))) == int(np.argmax(COLORS[label]))


def test_val_in_file_order_train_mixed(reference: tuple[Path, DataManifest]) -> None:
    output, manifest = reference
    val_keys = [k for s in manifest.shards_of("val") for k, _, _ in read_shard(output / s.path)]
    assert val_keys == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 7)]
    train_labels = [label for _, _, label in read_shard(output / "train-00000.tar")]
    assert len(set(train_labels)) > 1  # shards mix classes, for shuffling trainers
    mean = np.asarray(manifest.mean)
    assert mean.argmax() == 0 and mean.min() > 0.2  # more red (class 0 is larger), all three colors present


def _killed_at(step: str, finished: int, mapper: Mapper) -> Callable[[], Mapper]:
    """A mapper that finishes `finished` tasks of `step`, then dies, as a killed driver would."""

    def killing(
        function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str
    ) -> list[dict[str, Any]]:
        if what == step:
            mapper(function, items[:finished], what)
            raise KeyboardInterrupt("killed")
        return mapper(function, items, what)

    return lambda: killing


def _recording(mapper: Mapper, calls: dict[str, int]) -> Callable[[], Mapper]:
    def recording(
        function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str
    ) -> list[dict[str, Any]]:
        calls[what] = len(items)
        return mapper(function, items, what)

    return lambda: recording


@pytest.mark.parametrize("step", [PROCESS_STEP, SHARD_STEP])
def test_rerun_after_a_kill_keeps_finished_work_and_gives_the_same_manifest(
    step: str, imagenet_input: Path, reference: tuple[Path, DataManifest], mapper: Mapper, tmp_path: Path
) -> None:
    output = tmp_path / "data"
    job = imagenet_job(imagenet_input, output)
    units = len(plan_input(imagenet_input, job.dataset).units)
    with pytest.raises(KeyboardInterrupt):
        run(job, _killed_at(step, 2, mapper))
    assert not (output / "manifest.json").exists()
    finished_shards = {p: p.stat().st_mtime_ns for p in output.glob("*.tar")}

    calls: dict[str, int] = {}
    manifest = run(job, _recording(mapper, calls))

    if step == PROCESS_STEP:
        assert calls[PROCESS_STEP] == units - 2
    else:
        assert calls[PROCESS_STEP] == 0
        assert len(finished_shards) == 2
        assert {p: p.stat().st_mtime_ns for p in finished_shards} == finished_shards  # not rewritten
    assert manifest == reference[1]
    assert (output / "manifest.json").read_text() == (reference[0] / "manifest.json").read_text()
    assert not (output / WORK_DIR).exists()


def test_a_finished_output_is_left_alone(reference: tuple[Path, DataManifest], imagenet_input: Path) -> None:
    def no_spark() -> Mapper:
        raise AssertionError("started Spark for a finished output")

    assert run(imagenet_job(imagenet_input, reference[0]), no_spark) == reference[1]


def test_class_subset(imagenet_input: Path, mapper: Mapper, tmp_path: Path) -> None:
    manifest = run(imagenet_job(imagenet_input, tmp_path, classes=[WNIDS[2], WNIDS[1]]), lambda: mapper)
    assert [(c.index, c.wnid) for c in manifest.classes] == [(0, WNIDS[1]), (1, WNIDS[2])]
    assert manifest.splits["val"].per_class == [VAL_PER_CLASS, VAL_PER_CLASS]
    assert manifest.splits["train"].images == 2 * TRAIN_PER_CLASS


def test_spark_submit_runs_the_main_file(imagenet_input: Path, root: Path, tmp_path: Path) -> None:
    """The SparkApplication's way: spark-submit with __main__.py as a file, master from spark-submit."""
    from lth.api import RunSpec
    from lth.api.workload import spec_json

    spec = RunSpec.model_validate({"dataset": {"path": str(imagenet_input), "imageSize": 16}})
    venv = Path(sys.executable).parent  # as with the virtual environment activated
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [
            "spark-submit",
            "--master",
            "local[2]",
            str(root / "spark" / "lth_spark" / "__main__.py"),
            *[
                "--input",
                str(imagenet_input),
                "--output",
                str(tmp_path / "data"),
                "--spec-json",
                spec_json(spec),
            ],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = DataManifest.load(tmp_path / "data" / "manifest.json")
    assert manifest.splits["train"].images == 3 * TRAIN_PER_CLASS + len(CONVERTED)
    assert "decode+resize+encode: 5 tasks" in done.stdout  # progress in the log (spark-submit merges stderr)


def test_imagefolder_center_crop(mapper: Mapper, tmp_path: Path) -> None:
    for n, name in enumerate(
        ["train/a/1.jpg", "train/a/2.jpg", "train/b/3.jpg", "val/a/4.jpg", "val/b/5.jpg"]
    ):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rgb_jpeg(colored(n % 2, n, (30, 60))))
    dataset = DatasetSpec(format="imagefolder", path="in", image_size=16, resize="center-crop")
    manifest = run(Job(tmp_path / "in", tmp_path / "data", dataset, PreprocessingSpec()), lambda: mapper)
    assert manifest.splits["train"].per_class == [2, 1] and manifest.splits["val"].per_class == [1, 1]
    assert manifest.parameters["short_side"] == 16  # default: imageSize (the 16 x 16 center is kept)
    records = read_shard(tmp_path / "data" / "val-00000.tar")
    assert [(key, label) for key, _, label in records] == [("a/4", 0), ("b/5", 1)]
    assert all(simplejpeg.decode_jpeg(jpeg).shape == (16, 16, 3) for _, jpeg, _ in records)


def test_a_killed_shard_write_leaves_nothing_behind(
    imagenet_input: Path, reference: tuple[Path, DataManifest], mapper: Mapper, tmp_path: Path
) -> None:
    """A SIGKILL while a shard is written leaves its temp file; the rerun's folder holds
    exactly the files of an uninterrupted run, byte for byte (found at full ImageNet count)."""
    output = tmp_path / "data"
    job = imagenet_job(imagenet_input, output)
    with pytest.raises(KeyboardInterrupt):
        run(job, _killed_at(SHARD_STEP, 1, mapper))
    (output / ".train-00001.tar.k1ll3d.tmp").write_bytes(b"half a shard")
    (output / ".manifest.json.k1ll3d.tmp").write_bytes(b"{")
    run(job, lambda: mapper)

    def files(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert files(output) == files(reference[0])


def test_shard_tasks_carry_no_record_per_image(imagenet_input: Path, mapper: Mapper, tmp_path: Path) -> None:
    """What the driver hands Spark for the shard step does not grow with the images (at
    ImageNet's 1.3 M it was every record, through the driver's Python and its JVM): each
    task gets a path to its shard's records, a few hundred bytes whatever the shard holds."""
    seen: dict[str, Sequence[Any]] = {}

    def keeping(
        function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str
    ) -> list[dict[str, Any]]:
        seen[what] = items
        return mapper(function, items, what)

    job = imagenet_job(imagenet_input, tmp_path / "data")
    job = Job(
        job.input, job.output, job.dataset, job.preprocessing, shard_bytes=1 << 30
    )  # one shard per split
    manifest = run(job, lambda: keeping)
    plans = seen[SHARD_STEP]
    assert [p.images for p in plans] == [s.images for s in manifest.shards]
    assert plans[0].images == manifest.splits["train"].images > 10
    assert all(len(pickle.dumps(plan)) < 512 for plan in plans)


def test_the_same_key_twice_is_refused_naming_both_files(mapper: Mapper, tmp_path: Path) -> None:
    for name in ["train/a/x.1.jpg", "train/a/x_1.jpg", "val/a/v.jpg"]:  # both keys are a/x_1
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rgb_jpeg(colored(0, 1, (20, 20))))
    dataset = DatasetSpec(format="imagefolder", path="in", image_size=16)
    with pytest.raises(InputError, match=r"train/a/x.*same key 'a/x_1' as train/a/x.* in the train split"):
        run(Job(tmp_path / "in", tmp_path / "data", dataset, PreprocessingSpec()), lambda: mapper)


def test_a_shard_reads_more_blobs_than_it_may_hold_open(tmp_path: Path) -> None:
    """A train shard draws from every class's blob (1,000 at ImageNet); with fewer files
    allowed open than that, the least recently used are closed and the shard is the same."""
    blobs = [tmp_path / f"unit-{n}.bin" for n in range(3)]
    for n, blob in enumerate(blobs):
        blob.write_bytes(bytes([n]) * 300)
    order = [0, 1, 2, 0, 2, 1, 0]
    keys = np.array([f"k{i}".encode() for i in range(len(order))], dtype=np.bytes_)
    records = tmp_path / "records.npz"
    save_shard_records(
        records,
        keys,
        np.arange(len(order), dtype=np.int64),
        [b.as_posix() for b in blobs],
        np.array(order, dtype=np.int32),
        np.array([10 * i for i in range(len(order))], dtype=np.int64),
        np.full(len(order), 5, dtype=np.int64),
    )
    one = write_shard(
        ShardPlan("train", (tmp_path / "one.tar").as_posix(), records.as_posix(), len(order)), 1
    )
    many = write_shard(ShardPlan("train", (tmp_path / "many.tar").as_posix(), records.as_posix(), len(order)))
    assert one["sha256"] == many["sha256"] and one["images"] == len(order)
    assert [(k, jpeg) for k, jpeg, _ in read_shard(tmp_path / "one.tar")] == [
        (f"k{i}", bytes([b]) * 5) for i, b in enumerate(order)
    ]
