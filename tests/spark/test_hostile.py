"""Hostile and broken input: a damaged archive never becomes a smaller data set, and memory stays
bounded per file, whatever the headers declare (issue 23).

Most cases run the job in this process with a plain serial mapper (the tasks are the same
functions Spark runs); one runs it on Spark local[2] end to end, and the memory bounds run it
in a subprocess whose address space is capped with setrlimit.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from lth.api import DatasetSpec, PreprocessingSpec, RunSpec
from lth.api.naming import MANIFEST_FILE
from lth.api.workload import spec_json
from lth_spark.demo import Layout, rgb_jpeg, write_layout
from lth_spark.inputs import DEVKIT, TRAIN_TAR, VAL_TAR, InputError
from lth_spark.job import Job, run
from tests.spark.conftest import WNIDS, colored, imagenet_job, tiny_layout
from tests.spark.hostile import (
    corrupt_header,
    gnu_sparse_member,
    jpeg_claiming,
    member_offsets,
    run_limited,
    tar_of,
    tar_with,
    without_end,
)


def serial(function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str) -> list[Any]:
    return [function(item) for item in items]


def _run(root: Path, out: Path, **dataset: Any) -> Any:
    return run(imagenet_job(root, out, **dataset), lambda: serial)


def _refused(root: Path, tmp_path: Path, *fragments: str, **dataset: Any) -> str:
    """The job fails naming the problem, and writes no manifest."""
    out = tmp_path / "data"
    with pytest.raises(InputError) as caught:
        _run(root, out, **dataset)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (out / MANIFEST_FILE).exists()
    return message


def _layout(tmp_path: Path, layout: Layout | None = None) -> Path:
    root = tmp_path / "in"
    write_layout(layout or tiny_layout(bad_files=False), root)
    return root


def _class_tars(root: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(root / TRAIN_TAR) as outer:
        return [(m.name, outer.extractfile(m).read()) for m in outer.getmembers()]  # type: ignore[union-attr]


def _replace_class_tar(root: Path, index: int, inner: bytes) -> None:
    tars = _class_tars(root)
    tars[index] = (tars[index][0], inner)
    (root / TRAIN_TAR).write_bytes(tar_of(tars))


# --------------------------------------------------------------------------- archives read whole


@pytest.mark.parametrize("cut", ["between members", "inside a member", "inside a header"])
def test_a_train_tar_cut_short_is_refused_naming_it(tmp_path: Path, cut: str) -> None:
    """An interrupted download: the outer tar stops after 2 of 3 class tars (on a block
    boundary), inside the last one's data, or inside its header."""
    root = _layout(tmp_path)
    archive = (root / TRAIN_TAR).read_bytes()
    _, header, data = member_offsets(archive)[-1]
    ends = {"between members": header, "inside a member": data + 1024, "inside a header": header + 100}
    (root / TRAIN_TAR).write_bytes(archive[: ends[cut]])
    _refused(root, tmp_path, TRAIN_TAR, "byte")


def test_a_train_tar_that_lacks_classes_the_devkit_counts_is_refused(tmp_path: Path) -> None:
    """A whole outer tar with a class tar missing: the devkit says the class has images."""
    root = _layout(tmp_path)
    (root / TRAIN_TAR).write_bytes(tar_of(_class_tars(root)[:2]))
    _refused(root, tmp_path, TRAIN_TAR, WNIDS[2], "incomplete")


@pytest.mark.parametrize("damage", ["corrupt header midway", "cut short", "a member less"])
def test_a_damaged_class_tar_fails_the_job_naming_it(tmp_path: Path, damage: str) -> None:
    root = _layout(tmp_path)
    name, inner = _class_tars(root)[1]
    files = [(m[0], m[2]) for m in member_offsets(inner)]
    if damage == "corrupt header midway":
        inner = corrupt_header(inner, len(files) // 2)
    elif damage == "cut short":
        inner = without_end(inner)
    else:  # whole, but one file short of what the devkit's num_train_images says
        with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
            kept = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()[:-1]]  # type: ignore[union-attr]
        inner = tar_of(kept)
    _replace_class_tar(root, 1, inner)
    _refused(root, tmp_path, f"{TRAIN_TAR}:{name}")


def test_a_val_tar_cut_short_or_damaged_is_refused(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    archive = (root / VAL_TAR).read_bytes()
    (root / VAL_TAR).write_bytes(without_end(archive))
    _refused(root, tmp_path, VAL_TAR, "cut short")
    (root / VAL_TAR).write_bytes(corrupt_header(archive, 3))
    _refused(root, tmp_path, VAL_TAR, f"byte {member_offsets(archive)[3][1]}")


def test_a_class_tar_twice_or_as_a_link_is_refused(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    tars = _class_tars(root)
    (root / TRAIN_TAR).write_bytes(tar_of([*tars, (f"again/{tars[0][0]}", tars[0][1])]))
    _refused(root, tmp_path, f"class {WNIDS[0]} twice")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as outer:
        for name, data in tars[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(tars[2][0])
        link.type, link.linkname = tarfile.SYMTYPE, tars[0][0]
        outer.addfile(link)
    (root / TRAIN_TAR).write_bytes(buffer.getvalue())
    _refused(root, tmp_path, tars[2][0], "a link")


def test_non_utf8_member_names_and_a_corrupt_meta_mat_are_one_line(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    archive = bytearray((root / VAL_TAR).read_bytes())
    _, header, _ = member_offsets(bytes(archive))[0]
    archive[header] = 0xFF  # a Latin-1 byte in the name, checksum kept
    archive[header + 148 : header + 156] = b" " * 8
    archive[header + 148 : header + 156] = f"{sum(archive[header : header + 512]):06o}".encode() + b"\0 "
    (root / VAL_TAR).write_bytes(bytes(archive))
    _refused(root, tmp_path, VAL_TAR, "not UTF-8")
    write_layout(tiny_layout(bad_files=False), root)
    devkit = gzip.decompress((root / DEVKIT).read_bytes())
    _, _, data = next(m for m in member_offsets(devkit) if m[0].endswith("meta.mat"))
    damaged = devkit[:data] + b"MATLAB 5.0 MAT-file" + bytes(200) + b"\xff" * 300 + devkit[data + 519 :]
    (root / DEVKIT).write_bytes(gzip.compress(damaged))
    _refused(root, tmp_path, DEVKIT, "unreadable data/meta.mat")


def test_a_rerun_never_keeps_work_done_on_an_archive_that_changed(tmp_path: Path) -> None:
    """Every unit is done, then the job dies before its shards; the train tar is replaced by a
    damaged one: the rerun reads it again (and fails) instead of keeping the finished units."""
    root = _layout(tmp_path)
    out = tmp_path / "data"

    def dies_at_shards(function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str) -> Any:
        if what != "decode+resize+encode":
            raise KeyboardInterrupt
        return serial(function, items, what)

    with pytest.raises(KeyboardInterrupt):
        run(imagenet_job(root, out), lambda: dies_at_shards)
    name, inner = _class_tars(root)[0]
    _replace_class_tar(root, 0, corrupt_header(inner, 2))
    _refused(root, tmp_path, f"{TRAIN_TAR}:{name}")


@pytest.mark.slow
def test_on_spark_a_damaged_class_tar_exits_2_naming_it_with_no_manifest(tmp_path: Path, root: Path) -> None:
    data = _layout(tmp_path)
    name, inner = _class_tars(data)[2]
    _replace_class_tar(data, 2, corrupt_header(inner, 1))
    spec = RunSpec.model_validate({"dataset": {"path": "in", "imageSize": 16}})
    why = str(tmp_path / "why")
    arguments = ["--input", str(data), "--output", str(tmp_path / "out"), "--spec-json", spec_json(spec)]
    done = subprocess.run(
        [sys.executable, "-m", "lth_spark", *arguments, "--master", "local[2]", "--termination-log", why],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    message = Path(why).read_text()
    assert f"{TRAIN_TAR}:{name}" in message and "damaged header at byte" in message and "\n" not in message
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / MANIFEST_FILE).exists()


# --------------------------------------------------------------------------- layouts


def test_class_ids_that_differ_after_a_dot_stay_apart(tmp_path: Path) -> None:
    layout = tiny_layout(bad_files=False)
    layout.wnids = ["n01.a", "n01.b", "n02"]
    for label, wnid in enumerate(layout.wnids):
        layout.train[label] = [(f"{wnid}_{i}.JPEG", data) for i, (_, data) in enumerate(layout.train[label])]
    root = _layout(tmp_path, layout)
    manifest = _run(root, tmp_path / "data")
    assert manifest.splits["train"].per_class == [6, 6, 6]


def test_imagefolder_links_fifos_and_foreign_names_are_refused(tmp_path: Path) -> None:
    def folder() -> Path:
        root = tmp_path / "folder"
        for name in ["train/cat/a.jpg", "train/dog/b.jpg", "val/cat/c.jpg"]:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(rgb_jpeg(colored(0, 1, (20, 20))))
        return root

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(rgb_jpeg(colored(1, 2, (20, 20))))
    dataset = DatasetSpec(format="imagefolder", path="folder", image_size=16)
    cases: list[tuple[Callable[[Path], None], str]] = [
        (lambda r: (r / "train/cat/x.jpg").symlink_to(secret), "symbolic link"),
        (lambda r: (r / "train/bird").symlink_to(r / "train/cat"), "symbolic link"),
        (lambda r: (r / "train/cat/sub").symlink_to(tmp_path), "symbolic link"),
        (lambda r: os.mkfifo(r / "val/cat/pipe.jpg"), "not a regular file"),
        (lambda r: (r / os.fsdecode(b"train/cat/\xff.jpg")).write_bytes(b"x"), "not UTF-8"),
    ]
    for plant, fragment in cases:
        root = folder()
        plant(root)
        with pytest.raises(InputError, match=fragment):
            run(Job(root, tmp_path / "data", dataset, PreprocessingSpec()), lambda: serial)
        subprocess.run(["rm", "-rf", str(root), str(tmp_path / "data")], check=True)


# --------------------------------------------------------------------------- bounded memory

LIMITED_JOB = """
import json, sys
from pathlib import Path
from lth.api import DatasetSpec, PreprocessingSpec
from lth_spark.job import Job, run
root, out = Path(sys.argv[1]), Path(sys.argv[2])
serial = lambda function, items, what: [function(item) for item in items]
job = Job(root, out, DatasetSpec(path=str(root), image_size=16), PreprocessingSpec(), 16 << 10)
manifest = run(job, lambda: serial)
skipped = [[s.source, s.reason] for s in manifest.skipped]
print(json.dumps({"train": manifest.splits["train"].per_class, "skipped": skipped}))
"""


def test_members_that_declare_gigabytes_are_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """A 1 KB JPEG claiming 30000 x 30000, a sparse member declaring 4 GiB and a pax-declared
    sparse one (a few KB in the archive) in one class tar, and a val image claiming 20000 x
    20000: under a 1 GiB address space the job finishes, lists each as skipped with its reason,
    and keeps every other image."""
    layout = tiny_layout(bad_files=False)
    small = rgb_jpeg(colored(0, 3, (16, 16)))
    huge = jpeg_claiming(small, 30000, 30000)
    layout.train[0] += [("n01000000_huge.JPEG", huge), ("sparse", b""), ("pax", b"")]
    layout.val[0] = (layout.val[0][0], jpeg_claiming(small, 20000, 20000))
    root = _layout(tmp_path, layout)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("n01000000_pax.JPEG")
        info.size = 512
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.realsize": str(1 << 32)}
        tar.addfile(info, io.BytesIO(b"1\n0\n512\n".ljust(512, b"\0")))
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        pax = buffer.getvalue()[: tar.getmembers()[0].offset_data + 512]
    files = [f for f in layout.train[0] if f[0] not in ("sparse", "pax")]
    _replace_class_tar(root, 0, tar_with(files, gnu_sparse_member("n01000000_sparse.JPEG", 4 << 30), pax))
    code = LIMITED_JOB.replace("sys.argv[1]", repr(str(root)))
    code = code.replace("sys.argv[2]", repr(str(tmp_path / "data")))
    result = run_limited(code)
    assert result["train"] == [6, 6, 6]
    reasons = {source.rsplit(":", 1)[1]: reason for source, reason in result["skipped"]}
    assert set(reasons) == {
        "n01000000_huge.JPEG",
        "n01000000_sparse.JPEG",
        "n01000000_pax.JPEG",
        "ILSVRC2012_val_00000001.JPEG",
    }
    assert "30000 x 30000 pixels" in reasons["n01000000_huge.JPEG"]
    sparse = reasons["n01000000_sparse.JPEG"]
    assert "sparse member" in sparse and str(4 << 30) in sparse
    assert "sparse member" in reasons["n01000000_pax.JPEG"]
    assert "20000 x 20000 pixels" in reasons["ILSVRC2012_val_00000001.JPEG"]


def test_a_tiny_devkit_declaring_a_huge_meta_mat_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A devkit of a few hundred bytes whose meta.mat is a sparse member of 64 GiB, or declares
    more than a devkit member may hold: refused at once, never expanded."""
    root = _layout(tmp_path)
    truth = b"".join(f"{3 - label}\n".encode() for label, _ in tiny_layout(bad_files=False).val)
    devkit = tar_with(
        [("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)],
        gnu_sparse_member("ILSVRC2012_devkit_t12/data/meta.mat", 64 << 30),
    )
    (root / DEVKIT).write_bytes(gzip.compress(devkit))
    assert (root / DEVKIT).stat().st_size < 1024
    code = f"""
import json
from pathlib import Path
from lth.api import DatasetSpec
from lth_spark.inputs import InputError, plan_input
try:
    plan_input(Path({str(root)!r}), DatasetSpec(path={str(root)!r}))
    print(json.dumps({{"error": None}}))
except InputError as error:
    print(json.dumps({{"error": str(error)}}))
"""
    error = run_limited(code)["error"]
    assert error is not None and DEVKIT in error and "meta.mat" in error and "sparse member" in error
