"""The crops the network sees: random-resized crops in training (drawn for a whole batch from a
counter of seed, epoch and index), the center crop in evaluation, and their size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lth.api.data_manifest import DataManifest
from lth_trainer.store import TrainerError

Image_ = npt.NDArray[np.uint8]

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
"""Random-resized-crop area and aspect ranges: torchvision's RandomResizedCrop defaults, which
its references/classification and open_lth's ImageNet data train with."""


def central_crops(
    height: npt.NDArray[np.float64], width: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(h, w) of torchvision's fallback: the largest centred crop of valid aspect, per image."""
    aspect = width / height
    narrow, wide = aspect < RRC_RATIO[0], aspect > RRC_RATIO[1]
    h = np.where(narrow, np.rint(width / RRC_RATIO[0]), height)
    w = np.where(wide, np.rint(height * RRC_RATIO[1]), width)
    return h, w


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
    u: npt.NDArray[np.float64], height: npt.NDArray[np.float64], width: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """h, w of each try of rows of (scale, aspect) pairs, and whether it fits its image."""
    height, width = height[:, None], width[:, None]
    target = height * width * (RRC_SCALE[0] + u[:, 0::2] * (RRC_SCALE[1] - RRC_SCALE[0]))
    log_low, log_high = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    aspect = np.exp(log_low + u[:, 1::2] * (log_high - log_low))
    w, h = np.rint(np.sqrt(target * aspect)), np.rint(np.sqrt(target / aspect))
    return h, w, (w > 0) & (w <= width) & (h > 0) & (h <= height)


def random_resized_crops(
    u: npt.NDArray[np.float64], heights: npt.NDArray[np.int64], widths: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """(top, left, h, w, flip) per row of CROP_DRAWS uniforms over its own image (stored
    images may differ in size): torchvision's RandomResizedCrop.get_params rule (ten tries,
    then the largest centred crop of valid aspect) and a flip, for a whole batch. Most first
    tries fit, so only the rows whose first does not try the other nine."""
    height, width = heights.astype(np.float64), widths.astype(np.float64)
    h1, w1, fits1 = _tries(u[:, 0:2], height, width)
    h, w, found = h1[:, 0], w1[:, 0], fits1[:, 0]
    again = np.flatnonzero(~found)
    if again.size:
        h9, w9, fits9 = _tries(u[again, 2:20], height[again], width[again])
        first = fits9.argmax(axis=1)
        rows = np.arange(len(again))
        central_h, central_w = central_crops(height[again], width[again])
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


def eval_resize(crop: int) -> int:
    """The short side torchvision's reference resizes to before its center crop: 256 for 224."""
    return round(crop / EVAL_CROP_RATIO)


def eval_boxes(
    heights: npt.NDArray[np.int64], widths: npt.NDArray[np.int64], crop: int, whole: bool
) -> npt.NDArray[np.float32]:
    """(top, left, h, w, 0) of the evaluation crop of each image. Whole images as torchvision's
    reference evaluates: the center `crop` of the image resized to a short side of
    eval_resize(crop), i.e. a centred square of crop x short side / eval_resize(crop), exactly
    the center `crop` pixels where the stored short side is eval_resize(crop). Square stored
    images: their center `crop` pixels."""
    height, width = heights.astype(np.float64), widths.astype(np.float64)
    side = (
        crop * np.minimum(height, width) / eval_resize(crop) if whole else np.full(len(height), crop, float)
    )
    exact = side == crop
    top = np.where(exact, np.round((height - side) / 2), (height - side) / 2)
    left = np.where(exact, np.round((width - side) / 2), (width - side) / 2)
    return np.stack([top, left, side, side, np.zeros_like(side)], axis=1).astype(np.float32)


def default_crop(manifest: DataManifest) -> int:
    """The crop when spec.training.cropSize is absent, from what the manifest says was stored:
    87.5 % of the short side of center-cropped or whole data (at most the stored side), else
    the whole image (squashed data, or shards that do not say)."""
    stored = manifest.geometry
    if stored is not None and stored.resize != "squash" and stored.short_side is not None:
        return min(manifest.image_size, round(EVAL_CROP_RATIO * stored.short_side))
    return manifest.image_size


def crop_size(requested: int | None, manifest: DataManifest, data_dir: Path) -> int:
    """The side of the crops the network sees; a crop the stored images cannot give is refused
    (a random crop would be upsampled, and the center crop could not be taken)."""
    crop = requested or default_crop(manifest)
    stored = manifest.geometry
    if crop > manifest.image_size:
        images = (
            f"whole images of short side {manifest.image_size}"
            if stored is not None and stored.resize == "whole"
            else f"{manifest.image_size}x{manifest.image_size} images"
        )
        where = data_dir / "manifest.json"
        raise TrainerError(f"spec.training.cropSize: {crop} is larger than the {images} stored in {where}")
    return crop


def evaluation(crop: int, manifest: DataManifest) -> str:
    """What start.json says evaluation sees."""
    stored = manifest.geometry
    if stored is not None and stored.resize == "whole":
        return (
            f"center {crop} of each image resized to a short side of {eval_resize(crop)}, "
            f"from whole images of short side {manifest.image_size}"
        )
    return f"center {crop} of the {manifest.image_size} px stored images"
