"""Batches of decoded samples: the dataset over the index, this rank's share of every global
batch, and the DataLoader whose workers decode them.

Batches leave the workers as uint8 NHWC tensors (with each sample's crop box when training
augments); the step moves them to the device (`lth_trainer.data.device`), where they are
cropped, resized, flipped and normalised as a batch (4x less to copy than floats, and only
the JPEG decode per image on the CPU). A global, seeded order per epoch is cut the same way
by every world size, and a level resumes at any step."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import simplejpeg
import torch

from lth.api import LOADER_PREFETCH_BATCHES
from lth.api.data_manifest import DEFAULT_MAX_IMAGE_PIXELS, dct_scale
from lth.storage.lifetime import die_with_parent
from lth_trainer.data.crops import (
    CROP_DRAWS,
    Image_,
    eval_boxes,
    random_resized_crops,
    sample_uniforms,
)
from lth_trainer.data.header import checked_size
from lth_trainer.data.index import (
    ShardIndex,
)
from lth_trainer.store import TrainerError

Sample = tuple[Image_, int, npt.NDArray[np.float32]]
"""An image (HWC uint8), its class, and its crop box: (top, left, height, width, flip) in the
image's pixels, or an empty box when the image is already the crop."""


@dataclass(frozen=True)
class Batch:
    """Samples decoded together: images (B x H x W x 3 uint8), classes, crop boxes (B x 5 or B x 0)."""

    images: Image_
    labels: npt.NDArray[np.int64]
    boxes: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Slices:
    """Where each sample's crop is decoded and cut: its DCT scale (n of n/8), the rows and
    columns kept of the decoded image, and its box inside them."""

    scale: list[int]
    rows: list[tuple[int, int]]
    cols: list[tuple[int, int]]
    boxes: npt.NDArray[np.float32]


def slices(heights: npt.NDArray[np.int64], widths: npt.NDArray[np.int64], boxes: npt.NDArray[np.float32],
           crop: int) -> Slices:  # fmt: skip
    """Each crop at the smallest fast DCT scale that still gives it `crop` pixels a side, and
    the pixels of the decoded image it covers (what bilinear sampling of its box reads)."""
    top, left, h, w, flip = (boxes[:, k].astype(np.float64) for k in range(5))
    scale = [dct_scale(crop / side) for side in np.minimum(h, w).tolist()]
    factor = np.asarray(scale, dtype=np.float64)
    fy = np.ceil(heights * factor / 8) / heights
    fx = np.ceil(widths * factor / 8) / widths
    r0, c0 = np.floor(top * fy), np.floor(left * fx)
    r1 = np.minimum(np.ceil((top + h) * fy), np.ceil(heights * factor / 8))
    c1 = np.minimum(np.ceil((left + w) * fx), np.ceil(widths * factor / 8))
    inner = np.stack([top * fy - r0, left * fx - c0, h * fy, w * fx, flip], axis=1).astype(np.float32)
    rows = list(zip(r0.astype(int).tolist(), r1.astype(int).tolist(), strict=True))
    cols = list(zip(c0.astype(int).tolist(), c1.astype(int).tolist(), strict=True))
    return Slices(scale, rows, cols, inner)


class ShardDataset(torch.utils.data.Dataset[Sample]):
    """Samples by (epoch, index): the augmentation draws from a counter of (seed, epoch, index),
    so it is the same whichever rank or worker decodes the sample, and after a resume.

    The DataLoader fetches a batch at once (`__getitems__`): the JPEG headers give each
    image's size (whole stored images differ), the crop boxes are drawn over each whole image
    for the batch at once, and each JPEG is decoded at the smallest fast DCT scale that still
    covers its crop; the batch holds each crop (and one edge row and column repeated, so that
    sampling never reads past it) in rows as large as its largest, and the device resizes and
    flips them all to the crop size (Inputs). Evaluation crops that need no resampling (the
    center `crop` pixels) come cut to size, with no boxes."""

    def __init__(
        self,
        index: ShardIndex,
        crop_size: int,
        augment: bool,
        seed: int,
        whole: bool = False,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.index = index
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.whole = whole
        self.max_pixels = max_pixels
        self._files: dict[int, int] = {}
        self._pid = -1
        self._scratch = np.empty(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.index)

    def _reads(self, indexes: npt.NDArray[np.int64]) -> list[bytes]:
        if self._pid != os.getpid():  # a fresh worker: descriptors do not survive fork well
            self._files, self._pid = {}, os.getpid()
        index, files = self.index, self._files
        # Python ints for the whole batch at once: a numpy scalar per field and image costs
        # more than the pread of a small image.
        shards = index.shard_of[indexes].tolist()
        sizes, offsets = index.size[indexes].tolist(), index.offset[indexes].tolist()
        blobs = []
        for shard, size, offset in zip(shards, sizes, offsets, strict=True):
            fd = files.get(shard)
            if fd is None:
                fd = files[shard] = os.open(index.shards[shard], os.O_RDONLY)
            blobs.append(os.pread(fd, size, offset))
        return blobs

    def _where(self, i: int) -> str:
        """Sample `i`'s place, for a message: its shard and byte."""
        return f"{self.index.shards[int(self.index.shard_of[i])]} at byte {int(self.index.offset[i])}"

    def _sizes(self, blobs: list[bytes], indexes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """(height, width) of each image from its JPEG header, refused before it is decoded when
        it is no JPEG or declares more than spec.dataset.maxImagePixels (shards of prepared data
        may come from anyone); square stored data must agree."""
        sizes = np.empty((len(blobs), 2), dtype=np.int64)
        for row, (blob, i) in enumerate(zip(blobs, indexes.tolist(), strict=True)):
            sizes[row] = checked_size(blob, self.max_pixels, partial(self._where, i))
        if not self.whole:
            odd = np.flatnonzero((sizes != sizes[0]).any(axis=1))
            if odd.size:
                (height, width), (first_h, first_w) = sizes[odd[0]], sizes[0]
                shard = self.index.shards[int(self.index.shard_of[indexes[odd[0]]])]
                raise TrainerError(f"{shard}: a {height}x{width} image among {first_h}x{first_w} ones")
        return sizes

    def _decode(self, blob: bytes, scale: int, height: int, width: int, i: int) -> Image_:
        """Sample `i`'s image at n/8 of its size, into a scratch buffer reused by every image; a
        JPEG whose body cannot be decoded is a TrainerError naming its shard and byte."""
        need = -(-height * scale // 8) * -(-width * scale // 8) * 3
        if self._scratch.size < need:
            self._scratch = np.empty(need, dtype=np.uint8)
        try:
            image: Image_ = simplejpeg.decode_jpeg(
                blob, colorspace="RGB", min_height=-(-height * scale // 8), min_width=-(-width * scale // 8),
                buffer=self._scratch,
            )  # fmt: skip
        except ValueError as error:
            raise TrainerError(f"{self._where(i)}: a JPEG that cannot be decoded ({error})") from None
        return image

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> Batch:
        epochs = np.fromiter((epoch for epoch, _ in items), dtype=np.int64, count=len(items))
        indexes = np.fromiter((i for _, i in items), dtype=np.int64, count=len(items))
        blobs = self._reads(indexes)
        sizes = self._sizes(blobs, indexes)
        heights, widths, crop = sizes[:, 0], sizes[:, 1], self.crop_size
        if self.augment:
            uniforms = sample_uniforms(self.seed, epochs, indexes, CROP_DRAWS)
            boxes = random_resized_crops(uniforms, heights, widths)
        else:
            boxes = eval_boxes(heights, widths, crop, self.whole)
        if (boxes[:, 1] < 0).any() or (boxes[:, 0] < 0).any():
            raise TrainerError(
                f"spec.training.cropSize {crop} is larger than the {heights.min()}x{widths.min()} images"
            )
        cut = slices(heights, widths, boxes, crop)
        exact = not self.augment and (cut.boxes[:, 2:4] == crop).all() and (cut.boxes[:, :2] == 0).all()
        pad = 0 if exact else 1  # the repeated edge row and column
        slot_h = max(r1 - r0 for r0, r1 in cut.rows) + pad
        slot_w = max(c1 - c0 for c0, c1 in cut.cols) + pad
        images = np.empty((len(items), slot_h, slot_w, 3), dtype=np.uint8)
        for row, (blob, i) in enumerate(zip(blobs, indexes.tolist(), strict=True)):
            (r0, r1), (c0, c1) = cut.rows[row], cut.cols[row]
            decoded = self._decode(blob, cut.scale[row], int(heights[row]), int(widths[row]), i)
            h, w = r1 - r0, c1 - c0
            images[row, :h, :w] = decoded[r0:r1, c0:c1]
            if pad:  # sampling at the crop's far edges reads its own last row and column
                images[row, h : h + 1, :w] = images[row, h - 1 : h, :w]
                images[row, : h + 1, w : w + 1] = images[row, : h + 1, w - 1 : w]
        labels = self.index.label[indexes]
        if exact:
            return Batch(images, labels, np.zeros((len(items), 0), dtype=np.float32))
        return Batch(images, labels, cut.boxes)

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
