"""The crops from whole stored images: torchvision's RandomResizedCrop (its defaults, its rule,
the same box for the same seed, epoch and index on any rank or worker) and its reference
evaluation (resize the short side to crop / 0.875, take the center crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from lth_trainer.data.crops import (
    CROP_DRAWS,
    default_crop,
    eval_resize,
    random_resized_crops,
    sample_uniforms,
)
from lth_trainer.data.device import Inputs
from lth_trainer.data.index import index_split, load_manifest
from lth_trainer.data.loader import ShardDataset, TrainBatches, loader
from tests.trainer.shards import write_shards

WHOLE = {"resize": "whole", "image_size": 32, "short_side": 32, "max_side": 64}
"""What the Spark job records for whole images at a 32 px short side (256 at ImageNet scale)."""
CROP = 28
RAW = Inputs((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"), crop=CROP)
"""The device step without the normalisation: crops in 0..255."""


def whole_images(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Images with a 32 px short side and a long side of 32-64 px, either way round, and one
    panorama whose long side was capped (short side 20), as the Spark job stores them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        long = int(rng.integers(32, 65))
        height, width = (32, long) if i % 2 else (long, 32)
        if i == 5:
            height, width = 20, 64
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([np.sin(x / (3 + c) + y / (5 + c) + c) for c in range(3)], axis=-1)
        image = 127 + 100 * base + rng.normal(0, 4, (height, width, 3))
        out.append((np.clip(image, 0, 255).astype(np.uint8), i % 4))
    return out


@pytest.fixture(scope="module")
def stored_whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("whole")
    write_shards(path, {"train": whole_images(48, 0), "val": whole_images(12, 1)}, 4, 24, parameters=WHOLE)
    return path


def test_crop_bounds_are_torchvisions_defaults_over_each_whole_image() -> None:
    rng = np.random.default_rng(0)
    heights, widths = rng.integers(200, 600, 20000), rng.integers(200, 600, 20000)
    u = sample_uniforms(7, np.zeros(20000, np.int64), np.arange(20000, dtype=np.int64), CROP_DRAWS)
    top, left, h, w, flip = random_resized_crops(u, heights, widths).T.astype(np.float64)
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()
    )
    area = h * w / (heights * widths)
    assert area.min() >= 0.08 * 0.97 and area.max() <= 1.0 and area.min() < 0.09 and area.max() > 0.98
    assert ((w - 0.5) / (h + 0.5) <= 4 / 3).all() and ((w + 0.5) / (h - 0.5) >= 3 / 4).all()
    assert 0.48 < flip.mean() < 0.52


def test_the_crop_distribution_is_torchvisions_random_resized_crop() -> None:
    """The same rule as torchvision's RandomResizedCrop.get_params on ImageNet's average image
    stored at a 256 short side: the quantiles of area and aspect agree with torchvision's own
    draws, and an image too long for any try falls back to torchvision's centred crop."""
    height, width, count = 256, 310, 6000
    u = sample_uniforms(1, np.zeros(count, np.int64), np.arange(count, dtype=np.int64), CROP_DRAWS)
    ours = random_resized_crops(u, np.full(count, height), np.full(count, width))[:, :4].astype(np.float64)
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    draws = [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(count)]
    theirs = np.array(draws, dtype=np.float64)
    for boxes_a, boxes_b in ((ours, theirs),):  # area, aspect, top and left
        for stat in (lambda b: b[:, 2] * b[:, 3] / (height * width), lambda b: np.log(b[:, 3] / b[:, 2]),
                     lambda b: b[:, 0] / height, lambda b: b[:, 1] / width):  # fmt: skip
            quantiles = np.linspace(0.05, 0.95, 19)
            assert (
                np.abs(np.quantile(stat(boxes_a), quantiles) - np.quantile(stat(boxes_b), quantiles)).max()
                < 0.04
            )
    never = sample_uniforms(0, np.zeros(1, np.int64), np.zeros(1, np.int64), CROP_DRAWS)
    never[:, 0:20:2] = 0.999  # every try asks for the whole area: none fits a 20 x 100 image
    assert random_resized_crops(never, np.array([20]), np.array([100]))[0, :4].tolist() == [0, 36, 20, 27]


def _item_crops(dataset: ShardDataset, items: list[tuple[int, int]]) -> torch.Tensor:
    batch = dataset.__getitems__(items)
    return RAW(torch.from_numpy(batch.images), torch.from_numpy(batch.boxes))


def test_the_same_sample_gets_the_same_crop_on_any_rank_or_worker(stored_whole: Path) -> None:
    index = index_split(stored_whole, load_manifest(stored_whole), "train")
    dataset = ShardDataset(index, CROP, augment=True, seed=3, whole=True)
    single = list(TrainBatches(len(index), 8, 0, 1, seed=3).from_step(0, 2))
    one = torch.cat([_item_crops(dataset, batch) for batch in single])
    ranks = [list(TrainBatches(len(index), 8, r, 2, seed=3).from_step(0, 2)) for r in range(2)]
    two = torch.cat(
        [torch.cat([_item_crops(dataset, ranks[r][b]) for r in range(2)]) for b in range(len(single))]
    )
    assert torch.allclose(one, two, atol=1e-3)
    workers = [RAW(images, boxes) for images, _, boxes in loader(dataset, iter(single), workers=2, pin=False)]
    assert torch.allclose(one, torch.cat(workers), atol=1e-3)
    again = ShardDataset(index, CROP, augment=True, seed=3, whole=True)  # a resumed level
    assert torch.allclose(one[8:16], _item_crops(again, single[1]), atol=1e-3)


def test_a_training_crop_is_torchvisions_resized_crop_of_the_whole_stored_image(stored_whole: Path) -> None:
    """Each crop box is drawn over the whole stored image (whatever its size) and the device's
    resize of it is torchvision's resized_crop (bilinear, no antialias) and flip of that image."""
    index = index_split(stored_whole, load_manifest(stored_whole), "train")
    dataset = ShardDataset(index, CROP, augment=True, seed=11, whole=True)
    items = [(2, i) for i in range(len(index))]
    crops = _item_crops(dataset, items)
    u = sample_uniforms(11, np.full(len(items), 2), np.arange(len(items), dtype=np.int64), CROP_DRAWS)
    for i, crop in enumerate(crops):
        image = simplejpeg.decode_jpeg(dataset._reads(np.array([i]))[0], colorspace="RGB")
        top, left, h, w, flip = random_resized_crops(u[i : i + 1], np.array([image.shape[0]]),
                                                     np.array([image.shape[1]]))[0].tolist()  # fmt: skip
        tensor = torch.from_numpy(image).permute(2, 0, 1).float()
        expected = TF.resized_crop(tensor, int(top), int(left), int(h), int(w), [CROP, CROP], antialias=False)
        expected = TF.horizontal_flip(expected) if flip else expected
        assert torch.allclose(crop, expected, atol=0.01), i


def test_whole_images_are_evaluated_as_torchvisions_reference(stored_whole: Path) -> None:
    """Resize the short side to crop / 0.875 (32 for 28), then the center crop: exactly the
    center 28 x 28 pixels of each image stored at that short side (no resampling), and the
    capped panorama resized as the reference resizes it."""
    manifest = load_manifest(stored_whole)
    assert default_crop(manifest) == CROP and eval_resize(CROP) == 32
    val = ShardDataset(index_split(stored_whole, manifest, "val"), CROP, augment=False, seed=0, whole=True)
    decoded = [
        simplejpeg.decode_jpeg(val._reads(np.array([i]))[0], colorspace="RGB") for i in range(len(val))
    ]
    reference = [
        TF.center_crop(
            TF.resize(torch.from_numpy(d).permute(2, 0, 1).float(), [32], antialias=False), [CROP, CROP]
        )
        for d in decoded
    ]
    at_short_side = [i for i, d in enumerate(decoded) if min(d.shape[:2]) == 32]
    batch = val.__getitems__([(0, i) for i in at_short_side])
    assert batch.boxes.shape == (len(at_short_side), 0) and batch.images.shape[1:] == (CROP, CROP, 3)
    for row, i in enumerate(at_short_side):
        assert torch.equal(torch.from_numpy(batch.images[row]).permute(2, 0, 1).float(), reference[i])
    everything = _item_crops(val, [(0, i) for i in range(len(val))])
    panorama = next(i for i, d in enumerate(decoded) if min(d.shape[:2]) == 20)
    assert (everything[panorama] - reference[panorama]).abs().mean() < 4.0
    for i in at_short_side:
        assert torch.allclose(everything[i], reference[i], atol=0.01)
