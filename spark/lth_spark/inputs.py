"""Read the input's layout on the driver and cut it into units of work; fail fast, naming the file.

Accepted layouts (see README, "Preprocessing"):

- imagenet: `ILSVRC2012_img_train.tar` (one inner tar per WordNet id), or those
  inner tars unpacked into `train/`; `ILSVRC2012_img_val.tar` (flat files);
  `ILSVRC2012_devkit_t12.tar.gz`; optionally `ILSVRC2012_img_test_v10102019.tar`.
- imagefolder: `train/<class>/...` and `val/<class>/...` (optionally `test/...`,
  unlabeled), or only `<class>/...` folders, split by a hash of each path.

Only headers are read here (tar indexes, devkit, directory listings); the
images are read by the tasks.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lth.api import DatasetSpec
from lth.api.data_manifest import ClassInfo
from lth_spark.work import TEST_LABEL, Member, Unit, key_of

TRAIN_TAR = "ILSVRC2012_img_train.tar"
TRAIN_DIR = "train"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TEST_TARS = ("ILSVRC2012_img_test_v10102019.tar", "ILSVRC2012_img_test.tar")
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"

UNIT_BYTES = 64 << 20
"""Input bytes per task for member lists (val, test, folders): enough that Spark's per-task cost vanishes."""

UNIT_FILES = 8192
"""Files per task for member lists at most: a task carries its member list (about 70 bytes a file
pickled), and 64 MiB of small files (50,000 val files of 1 KB) made a 3.5 MB task."""

AUTO_VAL_MODULUS = 10
"""Class folders without train/val: a file goes to val when a hash of its path is 0 modulo this (~10 %)."""


class InputError(Exception):
    """The input is missing, unreadable or not in an accepted layout; the message names the file."""


@dataclass(frozen=True)
class InputPlan:
    classes: list[ClassInfo]
    units: list[Unit]


def plan_input(root: Path, dataset: DatasetSpec) -> InputPlan:
    """Classes and units of work of the input at `root`, per the spec's format and class subset."""
    if not root.exists():
        raise InputError(f"{root}: input path does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: input path is not a directory")
    if dataset.format == "imagenet":
        plan = _imagenet(root, dataset.classes)
    elif dataset.format == "imagefolder":
        plan = _imagefolder(root, dataset.classes)
    else:
        raise InputError(f"dataset.format: {dataset.format!r} data is already prepared; nothing to do")
    units = sorted(plan.units, key=lambda u: (-u.input_bytes, u.name))  # longest first: short tail
    return InputPlan(plan.classes, units)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the OS's and tarfile's errors into an InputError that names the file."""
    try:
        yield
    except tarfile.TarError as error:
        raise InputError(f"{path}: not a readable tar archive ({error})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None


def _tar_files(path: Path) -> list[tarfile.TarInfo]:
    """The regular files of an uncompressed tar, from its headers only."""
    with _reading(path), tarfile.open(path, mode="r:") as tar:
        return [info for info in tar.getmembers() if info.isfile()]


def _select(available: list[str], wanted: list[str] | None, where: Path) -> list[str]:
    if wanted is None:
        return available
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise InputError(f"dataset.classes: {', '.join(missing)} not found in {where}")
    return sorted(wanted)


def _chunks(members: list[Member], split: str, prefix: str, source: str) -> Iterable[Unit]:
    """Consecutive runs of members of about UNIT_BYTES each, UNIT_FILES at most."""
    chunks: list[list[Member]] = []
    size = UNIT_BYTES
    for member in members:
        if size >= UNIT_BYTES or len(chunks[-1]) >= UNIT_FILES:
            chunks.append([])
            size = 0
        chunks[-1].append(member)
        size += member.size
    for number, chunk in enumerate(chunks):
        yield Unit(split, f"{prefix}-{number:05d}", source, sum(m.size for m in chunk), members=tuple(chunk))


# --------------------------------------------------------------------------- imagenet


@dataclass(frozen=True)
class _Devkit:
    wnid_of_id: dict[int, str]
    name_of_wnid: dict[str, str]
    ground_truth: list[int]


def _read_devkit(path: Path) -> _Devkit:
    import scipy.io  # only the devkit needs it

    if not path.is_file():
        raise InputError(f"{path}: devkit missing (it holds the val labels: {GROUND_TRUTH}, {META})")
    with _reading(path), tarfile.open(path, mode="r:*") as tar:
        wanted = {GROUND_TRUTH: None, META: None}
        found: dict[str, bytes] = {}
        for info in tar:
            for suffix in wanted:
                if info.isfile() and (info.name == suffix or info.name.endswith("/" + suffix)):
                    data = tar.extractfile(info)
                    assert data is not None
                    found[suffix] = data.read()
    for suffix in wanted:
        if suffix not in found:
            raise InputError(f"{path}: devkit has no {suffix}")
    try:
        synsets = scipy.io.loadmat(io.BytesIO(found[META]), squeeze_me=True)["synsets"]
        leaves = [
            (int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
            for s in synsets
            if int(s["num_children"]) == 0
        ]
        ground_truth = [int(line) for line in found[GROUND_TRUTH].decode().split()]
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise InputError(f"{path}: unreadable {META} or {GROUND_TRUTH} ({error})") from None
    wnid_of_id = {ilsvrc_id: wnid for ilsvrc_id, wnid, _ in leaves}
    unknown = sorted(set(ground_truth) - set(wnid_of_id))
    if unknown:
        raise InputError(f"{path}: {GROUND_TRUTH} uses ILSVRC ids {unknown[:5]} that {META} does not define")
    return _Devkit(wnid_of_id, {wnid: words for _, wnid, words in leaves}, ground_truth)


class _ClassTar(NamedTuple):
    """One per-class tar: `length` bytes at `offset` of `path` (the outer tar, or its own file)."""

    wnid: str
    path: Path
    offset: int
    length: int
    source: str


def _train_tars(root: Path) -> list[_ClassTar]:
    """Every per-class tar, packed in the outer train tar or unpacked into train/."""
    outer = root / TRAIN_TAR
    if outer.is_file():
        found = []
        for info in _tar_files(outer):
            name = Path(info.name).name
            if not name.endswith(".tar"):
                raise InputError(f"{outer}: wrong layout, expected one tar per WordNet id, found {info.name}")
            wnid = name[: -len(".tar")]
            found.append(_ClassTar(wnid, outer, info.offset_data, info.size, f"{TRAIN_TAR}:{info.name}"))
        return found
    unpacked = root / TRAIN_DIR
    if unpacked.is_dir():
        tars = sorted(p for p in unpacked.iterdir() if p.suffix == ".tar")
        return [_ClassTar(p.stem, p, 0, p.stat().st_size, f"{TRAIN_DIR}/{p.name}") for p in tars]
    raise InputError(
        f"{outer}: missing (nor is there a {unpacked}/ folder of per-class tars); "
        "is the input in the ImageNet layout?"
    )


def _is_empty_tar(path: Path, offset: int, length: int) -> bool:
    with _reading(path), open(path, "rb") as file:
        file.seek(offset)
        with tarfile.open(fileobj=io.BytesIO(file.read(min(length, 1 << 16))), mode="r|") as tar:
            try:
                return tar.next() is None
            except tarfile.ReadError:
                return False  # a first member larger than what was read: not empty


def _imagenet(root: Path, wanted: list[str] | None) -> InputPlan:
    train = {tar.wnid: tar for tar in _train_tars(root)}
    devkit = _read_devkit(root / DEVKIT)
    for tar in sorted(train.values()):
        if tar.wnid not in devkit.name_of_wnid:
            raise InputError(
                f"{tar.path}: {tar.source} is WordNet id {tar.wnid}, which {root / DEVKIT} does not define"
            )
    wnids = _select(sorted(train), wanted, root / TRAIN_TAR)
    index = {wnid: i for i, wnid in enumerate(wnids)}
    classes = [ClassInfo(index=i, wnid=w, name=devkit.name_of_wnid[w]) for i, w in enumerate(wnids)]
    units = []
    for wnid in wnids:
        tar = train[wnid]
        if _is_empty_tar(tar.path, tar.offset, tar.length):
            raise InputError(f"{tar.path}: {tar.source} holds no images (class {wnid})")
        units.append(
            Unit(
                "train",
                f"train-{wnid}",
                tar.source,
                tar.length,
                tar.path.as_posix(),
                tar.offset,
                tar.length,
                index[wnid],
            )
        )

    val_tar = root / VAL_TAR
    if not val_tar.is_file():
        raise InputError(f"{val_tar}: missing")
    val_files = sorted(_tar_files(val_tar), key=lambda info: info.name)
    if len(val_files) != len(devkit.ground_truth):
        raise InputError(
            f"{root / DEVKIT}: {GROUND_TRUTH} has {len(devkit.ground_truth)} labels "
            f"but {val_tar} holds {len(val_files)} files"
        )
    val = [
        Member(
            val_tar.as_posix(),
            info.offset_data,
            info.size,
            key_of(info.name),
            index[wnid],
            f"{VAL_TAR}:{info.name}",
        )
        for info, ilsvrc_id in zip(val_files, devkit.ground_truth, strict=True)
        if (wnid := devkit.wnid_of_id[ilsvrc_id]) in index
    ]
    units += _chunks(val, "val", "val", VAL_TAR)

    for name in TEST_TARS:
        test_tar = root / name
        if test_tar.is_file():
            test = [
                Member(
                    test_tar.as_posix(), i.offset_data, i.size, key_of(i.name), TEST_LABEL, f"{name}:{i.name}"
                )
                for i in sorted(_tar_files(test_tar), key=lambda info: info.name)
            ]
            units += _chunks(test, "test", "test", name)
            break
    return InputPlan(classes, units)


# --------------------------------------------------------------------------- image folders


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    """Every visible file below a folder, in a stable order."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(parent) / f for f in sorted(files) if not f.startswith(".")]
    return found


def _class_folders(folder: Path) -> list[str]:
    with _reading(folder):
        entries = sorted(p for p in folder.iterdir() if _visible(p))
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise InputError(
            f"{loose[0]}: wrong layout, a file outside a class folder (expected {folder}/<class>/...)"
        )
    return [p.name for p in entries]


def _members(root: Path, folder: Path, label: int, key_prefix: str) -> list[Member]:
    return [
        Member(
            path.as_posix(),
            0,
            path.stat().st_size,
            f"{key_prefix}{key_of(path.relative_to(folder).as_posix())}",
            label,
            path.relative_to(root).as_posix(),
        )
        for path in _files_under(folder)
    ]


def _auto_val(member: Member) -> bool:
    digest = hashlib.blake2b(member.source.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % AUTO_VAL_MODULUS == 0


def _imagefolder(root: Path, wanted: list[str] | None) -> InputPlan:
    split_layout = (root / "train").is_dir()
    train_root = root / "train" if split_layout else root
    available = _class_folders(train_root)
    if not available:
        raise InputError(
            f"{root}: unknown layout, expected train/<class>/... and val/<class>/..., or <class>/..."
        )
    names = _select(available, wanted, train_root)
    classes = [ClassInfo(index=i, wnid=n, name=n) for i, n in enumerate(names)]
    if split_layout:
        val_root = root / "val"
        if not val_root.is_dir():
            raise InputError(f"{val_root}: missing (train/ needs a val/ folder beside it)")
        extra = sorted(set(_class_folders(val_root)) - set(available))
        if extra:
            raise InputError(f"{val_root / extra[0]}: class folder that train/ does not have")
    units: list[Unit] = []
    for label, name in enumerate(names):
        train = _members(root, train_root / name, label, f"{name}/")
        if split_layout:
            val_folder = root / "val" / name
            val = _members(root, val_folder, label, f"{name}/") if val_folder.is_dir() else []
        else:
            val = [m for m in train if _auto_val(m)]
            train = [m for m in train if not _auto_val(m)]
        if not train:
            raise InputError(f"{train_root / name}: class folder holds no training images")
        units += _chunks(train, "train", f"train-{label:05d}", name)
        units += _chunks(val, "val", f"val-{label:05d}", name)
    test_root = root / "test"
    if split_layout and test_root.is_dir():
        units += _chunks(_members(root, test_root, TEST_LABEL, ""), "test", "test", "test")
    return InputPlan(classes, units)
