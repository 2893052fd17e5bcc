"""Read the input's layout on the driver and cut it into units of work; fail fast, naming the file.

Accepted layouts (see README, "Preprocessing"):

- imagenet: `ILSVRC2012_img_train.tar` (one inner tar per WordNet id), or those
  inner tars unpacked into `train/`; `ILSVRC2012_img_val.tar` (flat files);
  `ILSVRC2012_devkit_t12.tar.gz`; optionally `ILSVRC2012_img_test_v10102019.tar`.
- imagefolder: `train/<class>/...` and `val/<class>/...` (optionally `test/...`,
  unlabeled), or only `<class>/...` folders, split by a hash of each path.

Only headers are read here (tar indexes, devkit, directory listings); the
images are read by the tasks. Every archive is indexed to its end-of-archive marker
(`lth_spark.tars`): one cut short or damaged fails the job naming the file and the byte,
before Spark starts. Links, devices and FIFOs are never followed or opened, and a class
never appears twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from lth.api import DatasetSpec
from lth.api.data_manifest import ClassInfo
from lth_spark.devkit import GROUND_TRUTH, META, Devkit, InputError, read_devkit, reading
from lth_spark.tars import Member as TarMember
from lth_spark.tars import TarReader
from lth_spark.work import TEST_LABEL, Member, Unit, Window, key_of

TRAIN_TAR = "ILSVRC2012_img_train.tar"
TRAIN_DIR = "train"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TEST_TARS = ("ILSVRC2012_img_test_v10102019.tar", "ILSVRC2012_img_test.tar")
__all__ = ["GROUND_TRUTH", "META", "InputError", "InputPlan", "plan_input"]

UNIT_BYTES = 64 << 20
"""Input bytes per task for member lists (val, test, folders): enough that Spark's per-task cost vanishes."""

UNIT_FILES = 8192
"""Files per task for member lists at most: a task carries its member list (about 70 bytes a file
pickled), and 64 MiB of small files (50,000 val files of 1 KB) made a 3.5 MB task."""

AUTO_VAL_MODULUS = 10
"""Class folders without train/val: a file goes to val when a hash of its path is 0 modulo this (~10 %)."""


@dataclass(frozen=True)
class InputPlan:
    classes: list[ClassInfo]
    units: list[Unit]
    archives: frozenset[str] = frozenset()
    """The archives the units read (their size and age are in each unit's fingerprint)."""


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
    return InputPlan(plan.classes, _fingerprinted(units, plan.archives), plan.archives)


def _fingerprinted(units: list[Unit], archives: frozenset[str]) -> list[Unit]:
    """Each unit with the digest of what it reads and of its archive's size and age, so a rerun
    after the input changed (a download finished, an archive replaced) redoes it."""
    states: dict[str, list[int]] = {}

    def state(path: str) -> list[int]:
        if path not in states:
            info = os.stat(path)
            states[path] = [info.st_size, info.st_mtime_ns]
        return states[path]

    done = []
    for unit in units:
        paths = {unit.tar_path} if unit.tar_path else {m.path for m in unit.members}
        what = [dataclasses.astuple(unit), [(a, state(a)) for a in sorted(paths & archives)]]
        digest = hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]
        done.append(dataclasses.replace(unit, fingerprint=digest))
    return done


# --------------------------------------------------------------------------- helpers


def _index(path: Path) -> list[TarMember]:
    """The members of a whole archive (its data skipped), checked to the end-of-archive marker."""
    with reading(path), path.open("rb") as file:
        return list(TarReader(file, str(path), os.fstat(file.fileno()).st_size))


def _tar_files(path: Path) -> list[TarMember]:
    """The regular files of an uncompressed tar, from its headers only; a link, device or sparse
    member (which a reader of images would pass by) is refused, and so is a name twice."""
    files, seen = [], set()
    for info in _index(path):
        if info.kind == "directory":
            continue
        if info.kind != "file":
            raise InputError(f"{path}: member {info.name} is {info.why_not_a_file}")
        if info.name in seen:
            raise InputError(f"{path}: holds {info.name} twice")
        seen.add(info.name)
        files.append(info)
    return files


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


class _ClassTar(NamedTuple):
    """One per-class tar: `length` bytes at `offset` of `path` (the outer tar, or its own file)."""

    wnid: str
    path: Path
    offset: int
    length: int
    source: str


def _class_id(name: str, where: str) -> str:
    """The WordNet id of a per-class tar's name."""
    wnid = name[: -len(".tar")]
    if not wnid or wnid.startswith(".") or any(c in wnid for c in "/\\\0"):
        raise InputError(f"{where}: {name!r} does not name a class (expected <WordNet id>.tar)")
    return wnid


def _packed_tars(outer: Path) -> list[_ClassTar]:
    found: dict[str, _ClassTar] = {}
    for info in _index(outer):
        if info.kind == "directory":
            continue
        name = PurePosixPath(info.name).name
        if info.kind != "file":
            raise InputError(f"{outer}: member {info.name} is {info.why_not_a_file}; expected class tars")
        if not name.endswith(".tar"):
            raise InputError(f"{outer}: wrong layout, expected one tar per WordNet id, found {info.name}")
        wnid = _class_id(name, str(outer))
        tar = _ClassTar(wnid, outer, info.offset, info.size, f"{TRAIN_TAR}:{info.name}")
        if wnid in found:
            raise InputError(f"{outer}: class {wnid} twice, as {found[wnid].source} and {tar.source}")
        found[wnid] = tar
    return list(found.values())


def _unpacked_tars(folder: Path) -> list[_ClassTar]:
    found = []
    with reading(folder):
        entries = sorted(folder.iterdir())
    for path in entries:
        if path.suffix != ".tar" or path.name.startswith("."):
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise InputError(f"{path}: a symbolic link; per-class tars must be files here (not followed)")
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file")
        wnid = _class_id(path.name, str(folder))
        found.append(_ClassTar(wnid, path, 0, path.stat().st_size, f"{TRAIN_DIR}/{path.name}"))
    return found


def _train_tars(root: Path) -> list[_ClassTar]:
    """Every per-class tar, packed in the outer train tar or unpacked into train/."""
    outer = root / TRAIN_TAR
    if outer.is_file():
        return _packed_tars(outer)
    unpacked = root / TRAIN_DIR
    if unpacked.is_dir():
        return _unpacked_tars(unpacked)
    raise InputError(
        f"{outer}: missing (nor is there a {unpacked}/ folder of per-class tars); "
        "is the input in the ImageNet layout?"
    )


def _is_empty_tar(tar: _ClassTar) -> bool:
    """Whether a class tar holds no member but folders (its first headers only)."""
    with reading(tar.path), tar.path.open("rb") as file:
        window = io.BufferedReader(Window(file, tar.offset, tar.length), 1 << 16)
        reader = TarReader(window, f"{tar.path}: {tar.source}", tar.length)
        return all(member.kind == "directory" for member in reader)


def _check_counts(devkit: Devkit, train: dict[str, _ClassTar], where: Path) -> None:
    """The devkit's classes with training images are the train tar's, and the val labels' too."""
    stated = {wnid for wnid, count in devkit.train_images.items() if count > 0}
    missing = sorted(stated - set(train))
    if missing:
        raise InputError(
            f"{where}: lacks {len(missing)} of the {len(stated)} classes the devkit lists training "
            f"images for ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): incomplete"
        )
    unlabeled = sorted({devkit.wnid_of_id[i] for i in devkit.ground_truth} - set(train))
    if unlabeled:
        raise InputError(
            f"{where}: holds no class tar for {', '.join(unlabeled[:5])}, which val images are labeled with"
        )


def _imagenet(root: Path, wanted: list[str] | None) -> InputPlan:
    train = {tar.wnid: tar for tar in _train_tars(root)}
    devkit = read_devkit(root / DEVKIT)
    for tar in sorted(train.values()):
        if tar.wnid not in devkit.name_of_wnid:
            raise InputError(
                f"{tar.path}: {tar.source} is WordNet id {tar.wnid}, which {root / DEVKIT} does not define"
            )
    _check_counts(devkit, train, root / TRAIN_TAR if (root / TRAIN_TAR).is_file() else root / TRAIN_DIR)
    wnids = _select(sorted(train), wanted, root / TRAIN_TAR)
    index = {wnid: i for i, wnid in enumerate(wnids)}
    classes = [ClassInfo(index=i, wnid=w, name=devkit.name_of_wnid[w]) for i, w in enumerate(wnids)]
    units = [_train_unit(train[wnid], index[wnid], devkit) for wnid in wnids]
    archives = {tar.path.as_posix() for tar in train.values()}
    val_tar = root / VAL_TAR
    units += _val_units(val_tar, devkit, index)
    archives.add(val_tar.as_posix())
    for name in TEST_TARS:
        test_tar = root / name
        if test_tar.is_file():
            test = [
                Member(test_tar.as_posix(), i.offset, i.size, key_of(i.name), TEST_LABEL, f"{name}:{i.name}")
                for i in sorted(_tar_files(test_tar), key=lambda info: info.name)
            ]
            units += _chunks(test, "test", "test", name)
            archives.add(test_tar.as_posix())
            break
    return InputPlan(classes, units, frozenset(archives))


def _train_unit(tar: _ClassTar, label: int, devkit: Devkit) -> Unit:
    """One class tar, streamed by one task; it must hold as many files as the devkit says."""
    if _is_empty_tar(tar):
        raise InputError(f"{tar.path}: {tar.source} holds no images (class {tar.wnid})")
    return Unit(
        "train",
        f"train-{tar.wnid}",
        tar.source,
        tar.length,
        tar.path.as_posix(),
        tar.offset,
        tar.length,
        label,
        expected_files=devkit.train_images.get(tar.wnid) or None,
    )


def _val_units(val_tar: Path, devkit: Devkit, index: dict[str, int]) -> list[Unit]:
    """The val files in name order, labeled by the devkit's ground truth (of the selected classes)."""
    if not val_tar.is_file():
        raise InputError(f"{val_tar}: missing")
    val_files = sorted(_tar_files(val_tar), key=lambda info: info.name)
    if len(val_files) != len(devkit.ground_truth):
        raise InputError(
            f"{val_tar.parent / DEVKIT}: {GROUND_TRUTH} has {len(devkit.ground_truth)} labels "
            f"but {val_tar} holds {len(val_files)} files"
        )
    val = [
        Member(
            val_tar.as_posix(),
            info.offset,
            info.size,
            key_of(info.name),
            index[wnid],
            f"{VAL_TAR}:{info.name}",
        )
        for info, ilsvrc_id in zip(val_files, devkit.ground_truth, strict=True)
        if (wnid := devkit.wnid_of_id[ilsvrc_id]) in index
    ]
    return list(_chunks(val, "val", "val", VAL_TAR))


# --------------------------------------------------------------------------- image folders


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _entry(path: Path) -> os.stat_result:
    """An entry of an image-folder tree, refused unless it is a folder or a regular file with a
    UTF-8 name: a link is never followed (it may point anywhere on the volume), and a FIFO,
    socket or device is never opened (a FIFO would block the task for good)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{path.as_posix()!r}: the name is not UTF-8") from None
    with reading(path):
        info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{path}: a symbolic link; an image folder holds files and folders (not followed)")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise InputError(f"{path}: not a regular file (a FIFO, socket or device)")
    return info


def _raise(error: OSError) -> None:
    raise InputError(f"{error.filename}: cannot read ({error.strerror or error})")


def _files_under(folder: Path) -> list[tuple[Path, int]]:
    """Every visible file below a folder and its size, in a stable order."""
    found = []
    for parent, dirs, files in os.walk(folder, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in dirs:
            _entry(Path(parent) / name)
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(parent) / name
            found.append((path, _entry(path).st_size))
    return found


def _class_folders(folder: Path) -> list[str]:
    with reading(folder):
        entries = sorted(p for p in folder.iterdir() if _visible(p))
    loose = [p for p in entries if not stat.S_ISDIR(_entry(p).st_mode)]
    if loose:
        raise InputError(
            f"{loose[0]}: wrong layout, a file outside a class folder (expected {folder}/<class>/...)"
        )
    return [p.name for p in entries]


def _members(root: Path, folder: Path, label: int, key_prefix: str) -> list[Member]:
    """The files of a class (or test) folder; keys as in the README: the path without its
    extension, every dot a `_`, the class folder's too (`n01.a` and `n01.b` must not meet)."""
    return [
        Member(
            path.as_posix(),
            0,
            size,
            key_of(f"{key_prefix}{path.relative_to(folder).as_posix()}"),
            label,
            path.relative_to(root).as_posix(),
        )
        for path, size in _files_under(folder)
    ]


def _auto_val(member: Member) -> bool:
    digest = hashlib.blake2b(member.source.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % AUTO_VAL_MODULUS == 0


def _imagefolder(root: Path, wanted: list[str] | None) -> InputPlan:
    for split in ("train", "val", "test"):
        if (root / split).is_symlink():
            _entry(root / split)
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
