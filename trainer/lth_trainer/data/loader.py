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

import numpy as np
import numpy.typing as npt
import simplejpeg
import torch

from lth.api import LOADER_PREFETCH_BATCHES
from lth.api.spec import DEFAULT_MAX_IMAGE_PIXELS
from lth.storage.lifetime import die_with_parent
from lth_trainer.data.crops import (
    CROP_DRAWS,
    Image_,
    random_resized_crops,
    sample_uniforms,
)
from lth_trainer.data.header import checked_size
from lth_trainer.data.index import (
    ShardIndex,
)
from lth_trainer.store import TrainerError

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

    def __init__(
        self,
        index: ShardIndex,
        crop_size: int,
        augment: bool,
        seed: int,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.index = index
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.max_pixels = max_pixels
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
        first_data = self.read(int(indexes[0]))
        where = f"{index.shards[shards[0]]} at byte {offsets[0]}"
        first_size = checked_size(first_data, self.max_pixels, where)
        try:
            first: Image_ = simplejpeg.decode_jpeg(first_data, colorspace="RGB")
        except ValueError as error:
            raise TrainerError(f"{where}: a JPEG that cannot be decoded ({error})") from None
        images = np.empty((len(items), *first.shape), dtype=np.uint8)
        images[0] = first
        for row in range(1, len(items)):
            shard = shards[row]
            fd = files.get(shard)
            if fd is None:
                fd = files[shard] = os.open(index.shards[shard], os.O_RDONLY)
            data = os.pread(fd, sizes[row], offsets[row])
            where = f"{index.shards[shard]} at byte {offsets[row]}"
            declared = checked_size(data, self.max_pixels, where)
            if declared != first_size:  # refused from its header, before it is decoded
                raise TrainerError(
                    f"{index.shards[shard]}: a {declared[0]}x{declared[1]} "
                    f"image among {first.shape[0]}x{first.shape[1]} ones"
                )
            try:  # straight into the batch: no array per image, no copy (np.stack cost 3 us an image)
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=images[row])
            except ValueError as error:
                raise TrainerError(f"{where}: a JPEG that cannot be decoded ({error})") from None
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
