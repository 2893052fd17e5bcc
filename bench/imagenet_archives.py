"""ILSVRC-2012 download layout at the real file counts, with tiny images: the scale rehearsal's input.

    PYTHONPATH=operator:spark .venv/bin/python -m bench.imagenet_archives OUT [--fraction 0.01]

writes into OUT, byte-identical from run to run:

- `ILSVRC2012_img_train.tar`: 1,000 inner tars `<wnid>.tar`, 1,281,167 files
  `<wnid>_<n>.JPEG` in all, 732 to 1,300 per class, 889 classes at 1,300 (the real
  spread: a long tail of 111 smaller classes, `class_counts`);
- `ILSVRC2012_img_val.tar`: 50,000 flat `ILSVRC2012_val_%08d.JPEG`, 50 per class in a
  shuffled order;
- `ILSVRC2012_img_test_v10102019.tar`: 100,000 `ILSVRC2012_test_%08d.JPEG`;
- `ILSVRC2012_devkit_t12.tar.gz`: `data/meta.mat` with the 1,000 leaf synsets (ILSVRC ids
  1..1000 not in WordNet-id order, as in the real file) and 860 non-leaf ones, and
  `data/ILSVRC2012_validation_ground_truth.txt`.

The images are a few hundred distinct small JPEGs (tens of pixels a side, q90, a few
hundred bytes to ~2 KB), reused under different names, so the whole set is ~3 GB and
is written in a few minutes: every tar is streamed, the inner tars built one at a time.

`--fraction 0.01` writes the same layout at 1/100 of the counts: every 100th class
(10 classes, their real per-class counts), 500 val and 1,000 test files, so a unit of
work (a class tar) is the same size as at full count and only the number of files changes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import simplejpeg

from lth_spark.inputs import DEVKIT, GROUND_TRUTH, META, TEST_TARS, TRAIN_TAR, VAL_TAR

CLASSES = 1000
TRAIN_IMAGES = 1_281_167
VAL_IMAGES = 50_000
TEST_IMAGES = 100_000
FULL_CLASS = 1300
SMALLEST_CLASS = 732
FULL_CLASSES = 889
NON_LEAF_SYNSETS = 860
DISTINCT = 300
SEED = 2012


def class_counts() -> list[int]:
    """Images per class in sorted-wnid order: 889 classes of 1,300 and a tail of 111 from 732
    up, summing to 1,281,167, the tail spread over the classes by a seeded permutation."""
    short = CLASSES - FULL_CLASSES
    deficit = CLASSES * FULL_CLASS - TRAIN_IMAGES  # 18,833 images fewer than 1,300 each
    x = np.linspace(1.0, 0.0, short, endpoint=False)  # 1 for the smallest class
    span = FULL_CLASS - SMALLEST_CLASS - 1
    low, high = 0.1, 20.0  # deficit_i = 1 + floor(567 * x**p): find p that sums to the deficit
    for _ in range(100):
        p = (low + high) / 2
        if (1 + np.floor(span * x**p)).sum() > deficit:
            low = p
        else:
            high = p
    deficits = (1 + np.floor(span * x**high)).astype(int)
    for i in range(
        deficit - int(deficits.sum())
    ):  # the rounding remainder, one each from the second class on
        deficits[1 + i] += 1
    tail = FULL_CLASS - deficits
    counts = np.full(CLASSES, FULL_CLASS)
    positions = np.random.default_rng(SEED).permutation(CLASSES)[:short]
    counts[positions] = tail
    assert counts.sum() == TRAIN_IMAGES and counts.min() == SMALLEST_CLASS and counts.max() == FULL_CLASS
    assert (counts == FULL_CLASS).sum() == FULL_CLASSES
    return [int(c) for c in counts]


def wnids() -> list[str]:
    """1,000 distinct WordNet-style ids (n + 8 digits), sorted, like n01440764 .. n15075141."""
    rng = np.random.default_rng(SEED)
    numbers = np.sort(rng.choice(np.arange(1_440_764, 15_075_142), CLASSES, replace=False))
    return [f"n{n:08d}" for n in numbers]


def tiny_jpegs(count: int = DISTINCT, seed: int = SEED) -> list[bytes]:
    """Distinct small photos-like JPEGs: 24 to 64 px a side, colour waves plus noise, q90."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(24, 65, 2))
        yy, xx = np.mgrid[0:height, 0:width]
        phase = rng.uniform(0, 6.28, 3)
        waves = np.stack([128 + 100 * np.sin(xx / 7 + p) * np.cos(yy / 9 - p) for p in phase], axis=-1)
        pixels = (waves + rng.normal(0, 9, waves.shape)).clip(0, 255).astype(np.uint8)
        images.append(simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=90, colorspace="RGB"))
    return images


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _write_tar(path: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """Stream (name, bytes) into a ustar file (temp + rename); the number of members."""
    temp = path.with_name(f".{path.name}.tmp")
    count = 0
    with open(temp, "wb") as raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            _add(tar, name, data)
            count += 1
    temp.replace(path)
    return count


def _inner_tar(files: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            _add(tar, name, data)
    return buffer.getvalue()


def ilsvrc_ids() -> list[int]:
    """ILSVRC id of each class (sorted-wnid order): a fixed permutation of 1..1000, as the real
    ids follow the WordNet hierarchy, not the sorted ids."""
    return [int(i) + 1 for i in np.random.default_rng(SEED + 1).permutation(CLASSES)]


def meta_mat(wnid_list: list[str], ids: list[int], counts: list[int]) -> bytes:
    """The devkit's meta.mat: 1,000 leaf synsets with their ids, then the non-leaf ones."""
    import scipy.io

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    leaves = len(wnid_list)
    rows: list[tuple[object, ...]] = [(0, "", "", "", 0, np.zeros((1, 0)), 0, 0)] * (
        leaves + NON_LEAF_SYNSETS
    )
    for index, (wnid, ilsvrc_id, count) in enumerate(zip(wnid_list, ids, counts, strict=True)):
        rows[ilsvrc_id - 1] = (
            ilsvrc_id,
            wnid,
            f"class {index}, synonym",
            f"gloss of {wnid}",
            0,
            np.zeros((1, 0)),
            0,
            count,
        )
    rng = np.random.default_rng(SEED + 2)
    for k in range(NON_LEAF_SYNSETS):
        ilsvrc_id = leaves + k + 1
        children = np.sort(rng.choice(np.arange(1, leaves + 1), min(3, leaves), replace=False)).reshape(1, -1)
        rows[ilsvrc_id - 1] = (
            ilsvrc_id,
            f"n{20_000_000 + k:08d}",
            f"group {k}",
            "a parent synset",
            3,
            children,
            1 + k % 18,
            0,
        )
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        synsets[i, 0] = tuple(
            v if isinstance(v, np.ndarray) else np.array([[v]]) if isinstance(v, int) else np.array([v])
            for v in row
        )
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def write_archives(out: Path, fraction: float = 1.0, log: bool = True) -> dict[str, int]:
    """Write the four archives into `out`; the counts written."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    jpegs = tiny_jpegs()
    all_wnids, all_counts, all_ids = wnids(), class_counts(), ilsvrc_ids()
    step = max(1, round(1 / fraction))
    chosen = list(range(0, CLASSES, step))
    val_count, test_count = round(VAL_IMAGES * fraction), round(TEST_IMAGES * fraction)

    def say(what: str) -> None:
        if log:
            print(f"{time.monotonic() - started:7.1f} s  {what}", flush=True)

    def train_members() -> Iterable[tuple[str, bytes]]:
        n = 0
        for c in chosen:
            wnid = all_wnids[c]
            files = []
            for i in range(all_counts[c]):
                files.append((f"{wnid}_{10_000 + 7 * i}.JPEG", jpegs[(n * 7919 + i) % DISTINCT]))
            n += len(files)
            yield f"{wnid}.tar", _inner_tar(files)
            if log and c % 100 == 0:
                say(f"train: class {c} ({n} files)")

    classes = _write_tar(out / TRAIN_TAR, train_members())
    train_count = sum(all_counts[c] for c in chosen)
    say(f"{TRAIN_TAR}: {classes} class tars, {train_count} files")

    rng = np.random.default_rng(SEED + 3)
    val_labels = rng.permutation(np.arange(val_count) % len(chosen))  # positions in `chosen`
    _write_tar(
        out / VAL_TAR,
        ((f"ILSVRC2012_val_{n + 1:08d}.JPEG", jpegs[(n * 31) % DISTINCT]) for n in range(val_count)),
    )
    say(f"{VAL_TAR}: {val_count} files")
    _write_tar(
        out / TEST_TARS[0],
        ((f"ILSVRC2012_test_{n + 1:08d}.JPEG", jpegs[(n * 37) % DISTINCT]) for n in range(test_count)),
    )
    say(f"{TEST_TARS[0]}: {test_count} files")

    wnid_list = [all_wnids[c] for c in chosen]
    ids = [all_ids[c] for c in chosen]
    if len(chosen) < CLASSES:  # ids of the subset renumbered 1..n, keeping their relative order
        rank = {v: r + 1 for r, v in enumerate(sorted(ids))}
        ids = [rank[v] for v in ids]
    ground_truth = "".join(f"{ids[label]}\n" for label in val_labels).encode()
    meta = meta_mat(wnid_list, ids, [all_counts[c] for c in chosen])
    devkit = _inner_tar(
        [
            (f"ILSVRC2012_devkit_t12/{GROUND_TRUTH}", ground_truth),
            (f"ILSVRC2012_devkit_t12/{META}", meta),
        ]
    )
    (out / DEVKIT).write_bytes(gzip.compress(devkit, mtime=0))
    say(f"{DEVKIT}: {len(chosen)} leaf synsets")
    return {"classes": len(chosen), "train": train_count, "val": val_count, "test": test_count}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.imagenet_archives", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("output", type=Path)
    parser.add_argument("--fraction", type=float, default=1.0, help="1/100 of the counts: 0.01")
    arguments = parser.parse_args()
    counts = write_archives(arguments.output, arguments.fraction)
    print(counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
