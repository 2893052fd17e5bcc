"""The ILSVRC-2012 devkit: val labels, class names and train counts, read in bounded memory.

`ILSVRC2012_devkit_t12.tar.gz` is a few MB; only two of its members are read (the val ground
truth and `meta.mat`), each at most DEVKIT_MEMBER_BYTES, and the stream at most DEVKIT_BYTES
uncompressed, so a tiny devkit that declares a huge (or sparse) member is refused, not
expanded. Every failure is an InputError naming the devkit.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from lth_spark.tars import BadArchive, TarReader

GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
DEVKIT_MEMBER_BYTES = 64 << 20
"""The ground truth and meta.mat are a few hundred KB; a member declaring more is refused."""
DEVKIT_BYTES = 1 << 30
"""The devkit's uncompressed bytes at most (the real one is tens of MB)."""


class InputError(Exception):
    """The input is missing, unreadable or not in an accepted layout; the message names the file."""


@dataclass(frozen=True)
class Devkit:
    wnid_of_id: dict[int, str]
    name_of_wnid: dict[str, str]
    ground_truth: list[int]
    train_images: dict[str, int]
    """Training images per WordNet id, where meta.mat states them (num_train_images)."""


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn the OS's, the decompressors' and the tar reader's errors into an InputError naming the file."""
    try:
        yield
    except BadArchive as error:
        raise InputError(str(error)) from None
    except (EOFError, zlib.error, lzma.LZMAError) as error:
        raise InputError(f"{path}: not a readable compressed archive ({error})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None


def _decompressed(file: BinaryIO) -> BinaryIO:
    """The devkit's tar stream, whatever it is compressed with (gzip as downloaded, or none)."""
    magic = file.read(6)
    file.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return cast(BinaryIO, gzip.GzipFile(fileobj=file, mode="rb"))
    if magic[:3] == b"BZh":
        return cast(BinaryIO, bz2.BZ2File(file))
    if magic == b"\xfd7zXZ\x00":
        return cast(BinaryIO, lzma.LZMAFile(file))
    return file


def _members(path: Path) -> dict[str, bytes]:
    """The wanted members' bytes, each checked against the caps."""
    found: dict[str, bytes] = {}
    with reading(path), path.open("rb") as raw, _decompressed(raw) as stream:
        reader = TarReader(stream, str(path), limit=DEVKIT_BYTES)
        for member in reader:
            suffix = next((s for s in (GROUND_TRUTH, META) if member.name in (s, f"./{s}")), None)
            if suffix is None:
                suffix = next((s for s in (GROUND_TRUTH, META) if member.name.endswith("/" + s)), None)
            if suffix is None or member.kind == "directory":
                continue
            if member.kind != "file":
                raise InputError(f"{path}: {member.name} is {member.why_not_a_file}")
            if member.size > DEVKIT_MEMBER_BYTES:
                raise InputError(
                    f"{path}: {member.name} is {member.size} bytes, more than the "
                    f"{DEVKIT_MEMBER_BYTES >> 20} MiB a devkit member may hold"
                )
            if suffix in found:
                raise InputError(f"{path}: holds {suffix} twice (again as {member.name})")
            found[suffix] = reader.read(member)
    for suffix in (GROUND_TRUTH, META):
        if suffix not in found:
            raise InputError(f"{path}: devkit has no {suffix}")
    return found


def _field(synset: Any, name: str) -> Any:
    return synset[name] if name in synset.dtype.names else None


def read_devkit(path: Path) -> Devkit:
    import scipy.io  # only the devkit needs it

    if not path.is_file():
        raise InputError(f"{path}: devkit missing (it holds the val labels: {GROUND_TRUTH}, {META})")
    found = _members(path)
    try:
        synsets = scipy.io.loadmat(io.BytesIO(found[META]), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets.ravel() if int(s["num_children"]) == 0]
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"])) for s in leaves]
        counts = [_field(s, "num_train_images") for s in leaves]
        train_images = {wnid: int(n) for (_, wnid, _), n in zip(rows, counts, strict=True) if n is not None}
        ground_truth = [int(line) for line in found[GROUND_TRUTH].decode().split()]
    except Exception as error:  # scipy's readers raise anything at all on a damaged file
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise InputError(f"{path}: unreadable {META} or {GROUND_TRUTH} ({detail})") from None
    wnid_of_id = {ilsvrc_id: wnid for ilsvrc_id, wnid, _ in rows}
    unknown = sorted(set(ground_truth) - set(wnid_of_id))
    if unknown:
        raise InputError(f"{path}: {GROUND_TRUTH} uses ILSVRC ids {unknown[:5]} that {META} does not define")
    return Devkit(wnid_of_id, {wnid: words for _, wnid, words in rows}, ground_truth, train_images)
