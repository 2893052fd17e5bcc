"""The crops the network sees: random-resized crops in training (drawn for a whole batch from a
counter of seed, epoch and index), the center crop in evaluation, and their size."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lth.api.data_manifest import DataManifest
from lth_trainer.store import TrainerError

Image_ = npt.NDArray[np.uint8]

RRC_SCALE = (0.1, 1.0)
RRC_RATIO = (0.8, 1.25)
"""Random-resized-crop area and aspect ranges (open_lth's ImageNet settings)."""


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
