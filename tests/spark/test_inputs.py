"""Bad inputs fail fast, before Spark starts, with a message that names the file; accepted layouts."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lth.api import DatasetSpec, RunSpec
from lth.api.workload import spec_json
from lth_spark import inputs
from lth_spark.demo import rgb_jpeg, write_layout
from lth_spark.inputs import DEVKIT, TRAIN_TAR, VAL_TAR, InputError, plan_input
from tests.spark.conftest import WNIDS, colored, tiny_layout


def _imagenet(tmp_path: Path) -> Path:
    write_layout(tiny_layout(bad_files=False), tmp_path)
    return tmp_path


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _expect(root: Path, named: str, fragment: str, **dataset: object) -> None:
    with pytest.raises(InputError) as caught:
        plan_input(root, DatasetSpec(path=str(root), **dataset))  # type: ignore[arg-type]
    assert named in str(caught.value) and fragment in str(caught.value)


def test_missing_devkit(tmp_path: Path) -> None:
    (_imagenet(tmp_path) / DEVKIT).unlink()
    _expect(tmp_path, DEVKIT, "devkit missing")


def test_devkit_without_ground_truth(tmp_path: Path) -> None:
    (_imagenet(tmp_path) / DEVKIT).write_bytes(gzip.compress(_tar({"README": b"hi"})))
    _expect(tmp_path, DEVKIT, "ILSVRC2012_validation_ground_truth.txt")


def test_ground_truth_that_does_not_match_the_val_files(tmp_path: Path) -> None:
    layout = tiny_layout(bad_files=False)
    layout.val.pop()
    write_layout(layout, tmp_path)
    (tmp_path / VAL_TAR).write_bytes(_tar({f"ILSVRC2012_val_{n:08d}.JPEG": b"x" for n in range(1, 8)}))
    _expect(tmp_path, DEVKIT, "5 labels but")


def test_train_tar_of_images_instead_of_class_tars(tmp_path: Path) -> None:
    (_imagenet(tmp_path) / TRAIN_TAR).write_bytes(_tar({"n01000000_1.JPEG": rgb_jpeg(colored(0, 1))}))
    _expect(tmp_path, TRAIN_TAR, "wrong layout")


def test_unreadable_val_tar(tmp_path: Path) -> None:
    (_imagenet(tmp_path) / VAL_TAR).write_bytes(b"this is not a tar archive" * 40)
    _expect(tmp_path, VAL_TAR, "not a readable tar")


def test_empty_class(tmp_path: Path) -> None:
    layout = tiny_layout(bad_files=False)
    layout.train[1] = []
    write_layout(layout, tmp_path)
    _expect(tmp_path, f"{WNIDS[1]}.tar", "holds no images")


def test_unknown_class_in_the_spec(tmp_path: Path) -> None:
    _expect(_imagenet(tmp_path), "dataset.classes", "n09999999", classes=["n09999999"])


def test_not_imagenet_at_all(tmp_path: Path) -> None:
    _expect(tmp_path, TRAIN_TAR, "missing")
    _expect(tmp_path / "nowhere", "nowhere", "does not exist")


def test_cli_fails_fast_naming_the_file(tmp_path: Path, root: Path) -> None:
    """No Spark starts for bad input: the error comes back in seconds, exit code 2."""
    (_imagenet(tmp_path / "in") / DEVKIT).unlink()
    spec = RunSpec.model_validate({"dataset": {"path": "in"}})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lth_spark",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--spec-json",
            spec_json(spec),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"error: {tmp_path / 'in' / DEVKIT}: devkit missing" in done.stderr
    assert "SparkContext" not in done.stderr


def _folder(root: Path, files: list[str]) -> Path:
    for n, name in enumerate(files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rgb_jpeg(colored(n % 3, n)))
    return root


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    root = _folder(
        tmp_path, ["train/cat/a.jpg", "train/cat/b.c.jpg", "train/dog/x/y.png", "val/dog/z.jpg", "test/t.jpg"]
    )
    plan = plan_input(root, DatasetSpec(format="imagefolder", path=str(root)))
    assert [(c.index, c.wnid, c.name) for c in plan.classes] == [(0, "cat", "cat"), (1, "dog", "dog")]
    members = {(u.split, m.key, m.label) for u in plan.units for m in u.members}
    assert members == {
        ("train", "cat/a", 0),
        ("train", "cat/b_c", 0),
        ("train", "dog/x/y", 1),
        ("val", "dog/z", 1),
        ("test", "t", -1),
    }


def test_imagefolder_of_class_folders_only_splits_by_path_hash(tmp_path: Path) -> None:
    root = _folder(tmp_path, [f"{c}/{i}.jpg" for c in ("a", "b") for i in range(30)])
    plan = plan_input(root, DatasetSpec(format="imagefolder", path=str(root)))
    val = {m.source for u in plan.units if u.split == "val" for m in u.members}
    train = {m.source for u in plan.units if u.split == "train" for m in u.members}
    assert not val & train and len(val | train) == 60 and 1 <= len(val) <= 15
    again = plan_input(root, DatasetSpec(format="imagefolder", path=str(root)))
    assert {m.source for u in again.units if u.split == "val" for m in u.members} == val


@pytest.mark.parametrize(
    ("files", "named"),
    [([], "unknown layout"), (["train/cat/a.jpg"], "val"), (["train/a.jpg", "val/cat/b.jpg"], "a.jpg")],
)
def test_imagefolder_wrong_layout(tmp_path: Path, files: list[str], named: str) -> None:
    _expect(_folder(tmp_path, files), named, "", format="imagefolder")


def test_inner_tars_already_unpacked(tmp_path: Path) -> None:
    packed = plan_input(_imagenet(tmp_path), DatasetSpec(path=str(tmp_path)))
    with tarfile.open(tmp_path / TRAIN_TAR) as outer:
        outer.extractall(tmp_path / "train", filter="data")
    (tmp_path / TRAIN_TAR).unlink()
    unpacked = plan_input(tmp_path, DatasetSpec(path=str(tmp_path)))
    assert unpacked.classes == packed.classes
    assert [(u.name, u.label, u.tar_length) for u in unpacked.units] == [
        (u.name, u.label, u.tar_length) for u in packed.units
    ]
    assert {u.source for u in unpacked.units if u.split == "train"} == {f"train/{w}.tar" for w in WNIDS}


def test_a_unit_of_small_files_is_cut_by_count_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At ImageNet's count with small files, 64 MiB of val was all 50,000 files in one task
    of 3.5 MB: units are cut at UNIT_FILES members as well as at UNIT_BYTES."""
    monkeypatch.setattr(inputs, "UNIT_FILES", 4)
    root = _imagenet(tmp_path)
    units = plan_input(root, DatasetSpec(path=str(root))).units
    val = sorted((u for u in units if u.split == "val"), key=lambda u: u.name)
    assert [len(u.members) for u in val] == [4, 2]  # the 6 val files of the tiny layout
    assert [m.key for u in val for m in u.members] == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 7)]
