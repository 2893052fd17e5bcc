"""Reading the shards: an index of the tar members, random access, JPEG decode, crops.

The shards are WebDataset-layout tars (`<split>-NNNNN.tar`, members `<key>.jpg`
and `<key>.cls`). The index keeps, per sample, the shard, the byte offset and
size of its JPEG, and its class, so a sample is one pread and one decode and
any rank or worker can read any sample. That gives a global, seeded order per
epoch that every world size cuts the same way, and a resume at any step.

Batches leave the workers as uint8 NHWC tensors (with each sample's crop box when
training augments); the step moves them to the device, where they are cropped,
resized, flipped and normalised as a batch and become channels_last NCHW floats
(4x less to copy than floats, and only the JPEG decode per image on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import simplejpeg
import torch

from lth.api import LOADER_PREFETCH_BATCHES
from lth.api.data_manifest import DataManifest, Split
from lth.api.naming import MANIFEST_FILE
from lth.storage.files import atomic_write
from lth.storage.lifetime import die_with_parent
from lth_trainer.store import TrainerError

BLOCK = tarfile.BLOCKSIZE
ZERO_BLOCK = bytes(BLOCK)

RRC_SCALE = (0.1, 1.0)
RRC_RATIO = (0.8, 1.25)
"""Random-resized-crop area and aspect ranges (open_lth's ImageNet settings)."""

Image_ = npt.NDArray[np.uint8]


def load_manifest(data_dir: Path) -> DataManifest:
    path = data_dir / MANIFEST_FILE
    if not path.is_file():
        raise TrainerError(f"{path}: data manifest does not exist (has the preprocessing finished?)")
    try:
        return DataManifest.load(path)
    except ValueError as error:
        raise TrainerError(f"{path}: invalid data manifest: {error}") from error


@dataclass(frozen=True)
class ShardIndex:
    """Every sample of one split: shard file, JPEG offset and size, class."""

    shards: tuple[Path, ...]
    shard_of: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    label: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.label)


def scan_tar(path: Path) -> Iterator[tuple[str, int, int, Callable[[], bytes]]]:
    """(name, data offset, size, content) of each regular member, headers read straight from a map.

    The shards are plain ustar archives, so a header is one 512-byte block: this is
    about 20 times faster than `tarfile` (seconds per level start at ImageNet scale).
    Any other header kind (pax, GNU long names) goes through `tarfile` instead.
    """
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position, end = 0, len(data)
        members: list[tuple[str, int, int]] = []
        while position + BLOCK <= end:
            header = data[position : position + BLOCK]
            if header == ZERO_BLOCK:
                break
            if header[156:157] not in (b"0", b"\0") or header[257:262] != b"ustar":
                yield from _scan_with_tarfile(path)
                return
            checksum = sum(header[:148]) + 8 * 32 + sum(header[156:])  # the checksum field counts as spaces
            if checksum != int(header[148:156].strip(b"\0 ") or b"0", 8):
                raise tarfile.TarError(f"bad header checksum at byte {position}")
            name = header[0:100].split(b"\0", 1)[0].decode()
            prefix = header[345:500].split(b"\0", 1)[0].decode()
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
            offset = position + BLOCK
            if offset + size > end:
                raise tarfile.TarError(f"member {name} runs past the end of the file")
            members.append((f"{prefix}/{name}" if prefix else name, offset, size))
            position = offset + -(-size // BLOCK) * BLOCK
        for name, offset, size in members:
            yield name, offset, size, _reader(data, offset, size)


def _reader(data: mmap.mmap, offset: int, size: int) -> Callable[[], bytes]:
    return lambda: bytes(data[offset : offset + size])


def _scan_with_tarfile(path: Path) -> Iterator[tuple[str, int, int, Callable[[], bytes]]]:
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isfile():
                content = tar.extractfile(member)
                assert content is not None
                yield member.name, member.offset_data, member.size, content.read


def _shard_paths(data_dir: Path, manifest: DataManifest, split: Split) -> list[Path]:
    """The split's shards, each there and of the size the manifest lists (a stat each)."""
    infos = manifest.shards_of(split)
    if not infos:
        raise TrainerError(f"{data_dir / MANIFEST_FILE}: no {split} shards listed")
    paths = []
    for info in infos:
        path = data_dir / info.path
        if not path.is_file():
            raise TrainerError(f"{path}: shard listed in the manifest is missing")
        if path.stat().st_size != info.bytes:
            raise TrainerError(f"{path}: {path.stat().st_size} bytes, the manifest says {info.bytes}")
        paths.append(path)
    return paths


INDEX_FORMAT = 1


def index_key(data_dir: Path, manifest: DataManifest, split: Split) -> str:
    """What a saved index was built from: the data directory and its split's shards by checksum."""
    shards = [(s.path, s.bytes, s.sha256, s.images) for s in manifest.shards_of(split)]
    what = [INDEX_FORMAT, str(data_dir.resolve()), split, manifest.num_classes, shards]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def save_index(path: Path, index: ShardIndex, key: str) -> None:
    arrays = {
        "key": np.array(key),
        "shards": np.array([p.name for p in index.shards]),
        "shard_of": index.shard_of,
        "offset": index.offset,
        "size": index.size,
        "label": index.label,
    }

    def write(temp: Path) -> None:
        with temp.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def load_index(
    path: Path, key: str, data_dir: Path, manifest: DataManifest, split: Split
) -> ShardIndex | None:
    """The index saved at `path` if it was built from these shards, else None."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            names = [str(n) for n in saved["shards"]]
            shard_of, offset, size, label = (saved[k] for k in ("shard_of", "offset", "size", "label"))
    except (OSError, KeyError, ValueError):  # absent, or damaged: scan again
        return None
    shards = _shard_paths(data_dir, manifest, split)
    if names != [p.name for p in shards]:
        return None
    return ShardIndex(tuple(shards), shard_of, offset, size, label)


def shared_index(
    data_dir: Path,
    manifest: DataManifest,
    split: Split,
    path: Path,
    main: bool,
    barrier: Callable[[], None],
) -> ShardIndex:
    """The split's index, scanned once per run: the main process reads the one saved at `path`
    or scans the shard headers and saves it; after `barrier` every other process reads it. At
    ImageNet scale a scan reads one header per image, over NFS most of the shards' blocks, so
    it is done once, not by every rank at every level."""
    key = index_key(data_dir, manifest, split)
    _shard_paths(data_dir, manifest, split)  # a missing shard fails every rank, not only the main one
    index = None
    if main:
        index = load_index(path, key, data_dir, manifest, split)
        if index is None:
            index = index_split(data_dir, manifest, split)
            save_index(path, index, key)
    barrier()
    if index is None:
        index = load_index(path, key, data_dir, manifest, split) or index_split(data_dir, manifest, split)
    return index


@dataclass(frozen=True)
class ShardColumns:
    """One shard's samples, sorted by key: JPEG offset and size, class."""

    offset: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    label: npt.NDArray[np.int64]


HEADER_ROWS = 1 << 14
"""Headers checked at a time (8 MiB), so a shard of any size is scanned in bounded memory."""


def _octal(fields: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Numeric tar fields (rows of ASCII octal digits, padded with NUL or spaces) as integers."""
    value = np.zeros(len(fields), dtype=np.int64)
    for column in fields.T:
        digit = (column >= ord("0")) & (column <= ord("7"))
        value = np.where(digit, value * 8 + (column.astype(np.int64) - ord("0")), value)
    return value


def _member_positions(data: mmap.mmap) -> tuple[list[int], list[int]]:
    """Header position and size of every member: the only per-member Python work of a scan."""
    positions: list[int] = []
    sizes: list[int] = []
    position, end = 0, len(data)
    while position + BLOCK <= end:
        if data[position] == 0 and data[position : position + BLOCK] == ZERO_BLOCK:
            break
        size = int(data[position + 124 : position + 136].strip(b"\0 ") or b"0", 8)
        positions.append(position)
        sizes.append(size)
        position += BLOCK + -(-size // BLOCK) * BLOCK
    return positions, sizes


def scan_shard(path: Path) -> ShardColumns:
    """The `.jpg` members of a shard by key, with the class of their `.cls` member.

    The headers are checked (kind, magic, checksum) and their names read as numpy rows,
    and the labels parsed the same way: about 1 us per member, so ImageNet's 1.3 M train
    images index in seconds. A shard that is not plain ustar with short names and decimal
    labels (pax or GNU headers, say) goes through `scan_tar`."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            positions, sizes = _member_positions(data)
        except ValueError as error:
            raise tarfile.TarError(f"bad size field: {error}") from error
        total = len(data)
    buffer: npt.NDArray[np.uint8] = np.memmap(path, dtype=np.uint8, mode="r")
    position = np.asarray(positions, dtype=np.int64)
    size = np.asarray(sizes, dtype=np.int64)
    if total % BLOCK:
        raise tarfile.TarError(f"{total} bytes, not a whole number of {BLOCK}-byte blocks")
    if len(position) and position[-1] + BLOCK + size[-1] > total:
        raise tarfile.TarError(f"member at byte {position[-1]} runs past the end of the file")
    blocks = buffer[: total // BLOCK * BLOCK].reshape(-1, BLOCK)
    names = np.zeros((len(position), 100), dtype=np.uint8)
    ustar = np.frombuffer(b"ustar", np.uint8)
    for start in range(0, len(position), HEADER_ROWS):
        rows = position[start : start + HEADER_ROWS]
        headers = blocks[rows // BLOCK]  # a tar member starts on a block
        plain = np.isin(headers[:, 156], (ord("0"), 0)) & (headers[:, 257:262] == ustar).all(1)
        if not (plain.all() and (headers[:, 345] == 0).all()):
            return _columns_of(scan_tar(path))
        checksum = headers[:, :148].sum(1, dtype=np.int64) + 8 * 32 + headers[:, 156:].sum(1, dtype=np.int64)
        bad = np.flatnonzero(checksum != _octal(headers[:, 148:156]))
        if bad.size:
            raise tarfile.TarError(f"bad header checksum at byte {rows[bad[0]]}")
        names[start : start + len(rows)] = headers[:, :100]
    length = np.where((names == 0).any(1), (names == 0).argmax(1), 100)
    extension = (np.arange(len(names))[:, None], np.maximum(length - 4, 0)[:, None] + np.arange(4))
    tail = names[extension]
    jpg = (tail == np.frombuffer(b".jpg", np.uint8)).all(1) & (length > 4)
    cls = (tail == np.frombuffer(b".cls", np.uint8)).all(1) & (length > 4)
    names[extension] = 0  # the key: the name without its extension
    keys = names.view(f"S{names.shape[1]}").ravel()
    jpg_keys, cls_keys = keys[jpg], keys[cls]
    by_key, cls_by_key = np.argsort(jpg_keys, kind="stable"), np.argsort(cls_keys, kind="stable")
    if len(jpg_keys) != len(cls_keys) or (jpg_keys[by_key] != cls_keys[cls_by_key]).any():
        raise ValueError(f"{len(jpg_keys)} images and {len(cls_keys)} labels with other keys")
    if (jpg_keys[by_key][1:] == jpg_keys[by_key][:-1]).any():
        raise ValueError("the same key twice")
    label_at, label_size = position[cls][cls_by_key] + BLOCK, size[cls][cls_by_key]
    width = int(label_size.max(initial=1))
    if width > 18 or (label_size == 0).any():
        raise ValueError("a label that is not a class index")
    text = blocks[label_at // BLOCK, :width]
    inside = np.arange(width) < label_size[:, None]
    if ((text >= ord("0")) & (text <= ord("9")) | ~inside).all():
        labels = np.zeros(len(text), dtype=np.int64)
        for column in range(width):
            digit = text[:, column].astype(np.int64) - ord("0")
            labels = np.where(inside[:, column], labels * 10 + digit, labels)
    else:  # signs, spaces: the general parse
        spans = zip(label_at.tolist(), label_size.tolist(), strict=True)
        labels = np.array([int(bytes(buffer[a : a + n]).decode().strip()) for a, n in spans], dtype=np.int64)
    return ShardColumns(position[jpg][by_key] + BLOCK, size[jpg][by_key], labels)


def _columns_of(members: Iterator[tuple[str, int, int, Callable[[], bytes]]]) -> ShardColumns:
    """The general path: any tar that `scan_tar` reads."""
    jpegs: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    for name, offset, size, content in members:
        key, _, ext = name.rpartition(".")
        if ext == "jpg":
            if key in jpegs:
                raise ValueError("the same key twice")
            jpegs[key] = (offset, size)
        elif ext == "cls":
            labels[key] = int(content().decode().strip())
    if set(jpegs) != set(labels):
        raise ValueError(f"{len(jpegs)} images and {len(labels)} labels with other keys")
    keys = sorted(jpegs)
    return ShardColumns(
        np.array([jpegs[k][0] for k in keys], dtype=np.int64),
        np.array([jpegs[k][1] for k in keys], dtype=np.int64),
        np.array([labels[k] for k in keys], dtype=np.int64),
    )


def index_split(data_dir: Path, manifest: DataManifest, split: Split) -> ShardIndex:
    """Scan the tar headers of a split's shards (labels come from the `.cls` members)."""
    infos = manifest.shards_of(split)
    paths = _shard_paths(data_dir, manifest, split)
    columns: list[ShardColumns] = []
    for info, path in zip(infos, paths, strict=True):
        try:
            shard = scan_shard(path)
        except (tarfile.TarError, ValueError) as error:
            raise TrainerError(f"{path}: unreadable shard: {error}") from error
        if len(shard.label) != info.images:
            raise TrainerError(f"{path}: {len(shard.label)} images, the manifest says {info.images}")
        columns.append(shard)
    label = np.concatenate([c.label for c in columns])
    if label.size and (label.min() < 0 or label.max() >= manifest.num_classes):
        raise TrainerError(f"{data_dir}: {split} labels outside 0..{manifest.num_classes - 1}")
    shard_of = np.concatenate([np.full(len(c.label), n, dtype=np.int32) for n, c in enumerate(columns)])
    offset = np.concatenate([c.offset for c in columns])
    size = np.concatenate([c.size for c in columns])
    return ShardIndex(tuple(paths), shard_of, offset, size, label)


def random_resized_crop(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with area in RRC_SCALE and aspect in RRC_RATIO, as
    torchvision samples it: ten tries, then the largest centred crop of valid aspect."""
    area = height * width
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return central_crop(height, width)


def central_crop(height: int, width: int) -> tuple[int, int, int, int]:
    """random_resized_crop's fallback: the largest centred crop of valid aspect."""
    aspect = width / height
    if aspect < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif aspect > RRC_RATIO[1]:
        h, w = height, round(height * RRC_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
CROP_DRAWS = 2 * 10 + 3
"""Uniform draws per sample: ten tries of (scale, aspect), then top, left and flip."""


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: 64 well-mixed bits of a counter (numpy arrays wrap, not warn)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(
    seed: int, epochs: npt.NDArray[np.int64], indexes: npt.NDArray[np.int64], draws: int
) -> npt.NDArray[np.float64]:
    """(samples x draws) uniforms in [0, 1) on a 2^-32 grid, a function of (seed, epoch, index,
    draw) only: counter-based, so a sample draws the same wherever and in whatever batch it is
    decoded, and a batch draws all at once (a seeded random.Random per sample cost more than
    the decode of a small image). Each 64 mixed bits give two draws."""
    words = (draws + 1) // 2
    key = _mix(np.full(len(indexes), seed, dtype=np.uint64) + _GOLDEN) ^ _mix(
        epochs.astype(np.uint64) * _GOLDEN
    )
    counter = (
        indexes.astype(np.uint64)[:, None] * np.uint64(words) + np.arange(words, dtype=np.uint64)
    ).astype(np.uint64)
    bits = _mix((key[:, None] + counter * _GOLDEN).astype(np.uint64))
    halves = bits.view(np.uint32).reshape(len(indexes), 2 * words)[:, :draws]
    return (halves * 2.0**-32).astype(np.float64)


def _tries(
    u: npt.NDArray[np.float64], height: int, width: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """h, w of each try of rows of (scale, aspect) pairs, and whether it fits."""
    target = height * width * (RRC_SCALE[0] + u[:, 0::2] * (RRC_SCALE[1] - RRC_SCALE[0]))
    log_low, log_high = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    aspect = np.exp(log_low + u[:, 1::2] * (log_high - log_low))
    w, h = np.rint(np.sqrt(target * aspect)), np.rint(np.sqrt(target / aspect))
    return h, w, (w > 0) & (w <= width) & (h > 0) & (h <= height)


def random_resized_crops(u: npt.NDArray[np.float64], height: int, width: int) -> npt.NDArray[np.float32]:
    """(top, left, h, w, flip) per row of CROP_DRAWS uniforms: random_resized_crop's rule
    (ten tries, then the largest centred crop of valid aspect) and a flip, for a whole batch.
    Most first tries fit, so only the rows whose first does not try the other nine."""
    h1, w1, fits1 = _tries(u[:, 0:2], height, width)
    h, w, found = h1[:, 0], w1[:, 0], fits1[:, 0]
    again = np.flatnonzero(~found)
    if again.size:
        h9, w9, fits9 = _tries(u[again, 2:20], height, width)
        first = fits9.argmax(axis=1)
        rows = np.arange(len(again))
        _, _, central_h, central_w = central_crop(height, width)
        any9 = fits9.any(axis=1)
        h[again] = np.where(any9, h9[rows, first], central_h)
        w[again] = np.where(any9, w9[rows, first], central_w)
        found[again] = any9
    top = np.where(found, np.floor(u[:, 20] * (height - h + 1)), (height - h) // 2)
    left = np.where(found, np.floor(u[:, 21] * (width - w + 1)), (width - w) // 2)
    return np.stack([top, left, h, w, u[:, 22] < 0.5], axis=1).astype(np.float32)


EVAL_CROP_RATIO = 0.875
"""Evaluation sees the center 87.5 % of the short side: 224 of 256, as torchvision's
references/classification and open_lth's ImageNet data evaluate."""


def default_crop(manifest: DataManifest) -> int:
    """The crop when spec.training.cropSize is absent, from what the manifest says was stored:
    87.5 % of the short side of center-cropped data (at most the stored side), else the whole
    image (squashed data, or shards that do not say)."""
    parameters = manifest.parameters
    short_side = parameters.get("short_side")
    if parameters.get("resize") == "center-crop" and isinstance(short_side, int):
        return min(manifest.image_size, round(EVAL_CROP_RATIO * short_side))
    return manifest.image_size


def crop_size(requested: int | None, manifest: DataManifest, data_dir: Path) -> int:
    """The side of the crops the network sees; a crop the stored images cannot give is refused
    (a random crop would be upsampled, and the center crop could not be taken)."""
    crop = requested or default_crop(manifest)
    if crop > manifest.image_size:
        raise TrainerError(
            f"spec.training.cropSize: {crop} is larger than the {manifest.image_size}x"
            f"{manifest.image_size} images stored in {data_dir / 'manifest.json'}"
        )
    return crop


def center_crop(image: Image_, size: int) -> Image_:
    height, width = image.shape[:2]
    if size > height or size > width:
        raise TrainerError(f"spec.training.cropSize {size} is larger than the {height}x{width} images")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


Sample = tuple[Image_, int, npt.NDArray[np.float32]]
"""An image (HWC uint8), its class, and its crop box: (top, left, height, width, flip)
in source pixels, or an empty box when the image is already cropped."""

NO_BOX = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Batch:
    """Samples decoded together: images (B x H x W x 3 uint8), classes, crop boxes (B x 5 or B x 0)."""

    images: Image_
    labels: npt.NDArray[np.int64]
    boxes: npt.NDArray[np.float32]


class ShardDataset(torch.utils.data.Dataset[Sample]):
    """Samples by (epoch, index): the augmentation draws from a counter of (seed, epoch, index),
    so it is the same whichever rank or worker decodes the sample, and after a resume.

    The DataLoader fetches a batch at once (`__getitems__`): each JPEG is decoded straight
    into the batch's array and the crop boxes are drawn for the whole batch; the device
    crops, resizes and flips the batch (Inputs), so the per-image CPU work is the decode."""

    def __init__(self, index: ShardIndex, crop_size: int, augment: bool, seed: int) -> None:
        self.index = index
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self._files: dict[int, int] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int) -> bytes:
        if self._pid != os.getpid():  # a fresh worker: descriptors do not survive fork well
            self._files, self._pid = {}, os.getpid()
        shard = int(self.index.shard_of[i])
        fd = self._files.get(shard)
        if fd is None:
            fd = self._files[shard] = os.open(self.index.shards[shard], os.O_RDONLY)
        return os.pread(fd, int(self.index.size[i]), int(self.index.offset[i]))

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> Batch:
        epochs = np.fromiter((epoch for epoch, _ in items), dtype=np.int64, count=len(items))
        indexes = np.fromiter((i for _, i in items), dtype=np.int64, count=len(items))
        if self._pid != os.getpid():  # a fresh worker: descriptors do not survive fork well
            self._files, self._pid = {}, os.getpid()
        index, files = self.index, self._files
        # Python ints for the whole batch at once: a numpy scalar per field and image costs
        # more than the pread of a small image.
        shards = index.shard_of[indexes].tolist()
        sizes, offsets = index.size[indexes].tolist(), index.offset[indexes].tolist()
        first: Image_ = simplejpeg.decode_jpeg(self.read(int(indexes[0])), colorspace="RGB")
        images = np.empty((len(items), *first.shape), dtype=np.uint8)
        images[0] = first
        for row in range(1, len(items)):
            shard = shards[row]
            fd = files.get(shard)
            if fd is None:
                fd = files[shard] = os.open(index.shards[shard], os.O_RDONLY)
            data = os.pread(fd, sizes[row], offsets[row])
            try:  # straight into the batch: no array per image, no copy (np.stack cost 3 us an image)
                image = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=images[row])
            except ValueError:  # larger than the batch's rows
                image = simplejpeg.decode_jpeg(data, colorspace="RGB")
            if image.shape != first.shape:
                raise TrainerError(
                    f"{index.shards[shard]}: a {image.shape[0]}x{image.shape[1]} "
                    f"image among {first.shape[0]}x{first.shape[1]} ones"
                )
        labels = self.index.label[indexes]
        if not self.augment:
            size = self.crop_size
            height, width = first.shape[:2]
            if size > height or size > width:
                raise TrainerError(
                    f"spec.training.cropSize {size} is larger than the {height}x{width} images"
                )
            top, left = (height - size) // 2, (width - size) // 2
            crops = np.ascontiguousarray(images[:, top : top + size, left : left + size])
            return Batch(crops, labels, np.zeros((len(items), 0), dtype=np.float32))
        uniforms = sample_uniforms(self.seed, epochs, indexes, CROP_DRAWS)
        return Batch(images, labels, random_resized_crops(uniforms, first.shape[0], first.shape[1]))

    def __getitem__(self, item: tuple[int, int]) -> Sample:
        batch = self.__getitems__([item])
        return batch.images[0], int(batch.labels[0]), batch.boxes[0]


def collate(batch: Batch | Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 NHWC images, int64 labels, float32 crop boxes (B x 5, or B x 0)."""
    if isinstance(batch, Batch):
        return torch.from_numpy(batch.images), torch.from_numpy(batch.labels), torch.from_numpy(batch.boxes)
    images = torch.from_numpy(np.stack([image for image, _, _ in batch]))
    labels = torch.tensor([label for _, label, _ in batch], dtype=torch.int64)
    boxes = torch.from_numpy(np.stack([box for _, _, box in batch]))
    return images, labels, boxes


def epoch_order(seed: int, epoch: int, samples: int) -> npt.NDArray[np.int64]:
    """The global sample order of one epoch; the same for every world size."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


@dataclass(frozen=True)
class TrainBatches:
    """This rank's share of every global batch, from a global step on.

    Global batch b of an epoch is positions [b*B, (b+1)*B) of the epoch's order;
    rank r takes the r-th of its world_size equal slices, so ranks never overlap
    and any world size trains on the same global batches. The tail that does
    not fill a batch is dropped.
    """

    samples: int
    batch_size: int
    rank: int
    world_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.samples // self.batch_size

    def from_step(self, step: int, epochs: int) -> Iterator[list[tuple[int, int]]]:
        """Batches from global step `step` to the end of epoch `epochs` - 1, in one stream
        (one DataLoader, whose workers live through the whole level)."""
        local = self.batch_size // self.world_size
        for epoch in range(step // self.steps_per_epoch, epochs):
            order = epoch_order(self.seed, epoch, self.samples)
            first = step - epoch * self.steps_per_epoch if epoch == step // self.steps_per_epoch else 0
            for b in range(first, self.steps_per_epoch):
                start = b * self.batch_size + self.rank * local
                yield [(epoch, int(i)) for i in order[start : start + local]]


def eval_batches(samples: int, batch_size: int, rank: int, world_size: int) -> list[list[tuple[int, int]]]:
    """Every sample exactly once over all ranks (rank r takes r, r+W, ...), no padding."""
    mine = list(range(rank, samples, world_size))
    return [[(0, i) for i in mine[s : s + batch_size]] for s in range(0, len(mine), batch_size)]


def die_with_trainer(worker_id: int) -> None:
    """A loader worker ends with its trainer, even one killed with SIGKILL. torch's workers look
    for a dead parent only between batches, and an orphan outlived its trainer by minutes in CI."""
    die_with_parent()


def loader(
    dataset: ShardDataset,
    batches: Iterator[list[tuple[int, int]]] | list[list[tuple[int, int]]],
    workers: int,
    pin: bool,
) -> torch.utils.data.DataLoader[Sample]:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=die_with_trainer,
        pin_memory=pin,
        prefetch_factor=LOADER_PREFETCH_BATCHES if workers else None,
        persistent_workers=False,
    )
