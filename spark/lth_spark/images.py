"""One image: decode whatever the file really is, resize as the spec says, encode JPEG.

Pure functions of bytes, so the Spark tasks and the benchmark's plain pool run the
very same code. simplejpeg (libjpeg-turbo) decodes ordinary JPEGs; everything it
refuses (CMYK, PNG named .JPEG, palette, EXIF-rotated, recoverable corruption)
goes through Pillow, and what Pillow cannot read either is an `UnreadableImage`.

A JPEG is decoded at the smallest fast DCT scale (1/8 to 1/2) that still covers the output,
which libjpeg-turbo does for less than a full decode (5/8 to 7/8 cost more than a full one).
The reduction left is antialiased with OpenCV: a Gaussian blur that widens bilinear's own
one-pixel tent to the tent of Pillow's antialiased bilinear (the same variance, r^2 / 6 for a
reduction r), then plain bilinear; a quarter of Pillow's time (plain bilinear alone aliases
visibly: 30 dB against Pillow on a sharp photo). Both are measured against the full decode and
Pillow's resize: PSNR in tests/spark/test_images.py, time in bench/bench_spark.py.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from lth.api.data_manifest import dct_scale

Pixels = NDArray[np.uint8]

cv2.setNumThreads(1)  # a task is one core: Spark and the pool run one task per core

BILINEAR_REDUCTION = 1.25
"""Up to this reduction plain bilinear hardly aliases, and a blur would only soften."""
_EXIF_ORIENTATION = 0x0112
_APP1, _START_OF_SCAN = 0xE1, 0xDA


class UnreadableImage(Exception):
    """The file is not an image that can be decoded; the message is the reason the manifest lists."""


@dataclass(frozen=True)
class Geometry:
    """What the spec asks for: a side x side square (squashed, or the center of a short side
    resized to short_side), or the whole image with its short side at short_side and its long
    side at most max_side."""

    image_size: int
    resize: Literal["squash", "center-crop", "whole"] = "squash"
    short_side: int = 0
    max_side: int = 0

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the stored image."""
        if self.resize != "whole":
            return self.image_size, self.image_size
        scale = min(self.short_side / min(width, height), self.max_side / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def source_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the source that survives the crop, so only it is resized."""
        if self.resize != "center-crop":
            return (0.0, 0.0, float(width), float(height))
        scale = self.short_side / min(width, height)
        crop_w = min(float(width), self.image_size / scale)
        crop_h = min(float(height), self.image_size / scale)
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        return (left, top, left + crop_w, top + crop_h)

    def needed_scale(self, width: int, height: int) -> float:
        """The output's size over the surviving region's, in the direction reduced least."""
        left, top, right, bottom = self.source_box(width, height)
        out_w, out_h = self.output_size(width, height)
        return max(out_w / (right - left), out_h / (bottom - top))


@dataclass(frozen=True)
class Decoded:
    """Upright RGB pixels and the file's own (width, height), which the pixels are at a DCT
    scale of."""

    pixels: Pixels
    source: tuple[int, int]


@dataclass(frozen=True)
class Processed:
    """An output image and its per-channel histogram (R, G, B x 256 counts): the manifest's mean and std."""

    jpeg: bytes
    histogram: list[int]


def _has_exif(data: bytes) -> bool:
    """An APP1 "Exif" segment among the JPEG's header segments (those before the scan): a walk
    over a few segment lengths, where searching the bytes cost 2 % of a decode."""
    at = 2
    while at + 10 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == _START_OF_SCAN:
            return False
        if marker == _APP1 and data[at + 4 : at + 10] == b"Exif\x00\x00":
            return True
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return False


def _exif_rotated(data: bytes) -> bool:
    if not _has_exif(data):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(_EXIF_ORIENTATION, 1)) != 1
    except Exception:  # a broken EXIF block: the decoders below judge the file
        return False


def decode(data: bytes, geometry: Geometry | None = None) -> Decoded:
    """Any image file as upright RGB pixels: a JPEG at the smallest fast DCT scale that still
    covers what `geometry` makes of it (full size without a geometry), the rest at full size."""
    if not data:
        raise UnreadableImage("empty file")
    if data[:2] == b"\xff\xd8" and not _exif_rotated(data):
        try:
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            n = 8 if geometry is None else dct_scale(geometry.needed_scale(width, height))
            pixels: Pixels = simplejpeg.decode_jpeg(
                data,
                min_height=math.ceil(height * n / 8),
                min_width=math.ceil(width * n / 8),
            )
        except ValueError:
            pass  # CMYK, or a recoverable error that Pillow tolerates: decided below
        else:
            return Decoded(pixels, (width, height))
    try:
        with Image.open(io.BytesIO(data)) as img:
            upright = ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can identify") from None
    except Exception as error:  # any file at all arrives here; one must not fail the whole task
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None
    return Decoded(np.asarray(upright), upright.size)


def _antialias_kernel(reduction: float) -> tuple[int, float]:
    """(size, sigma) of the Gaussian that, before bilinear, gives the variance of a tent of half-width
    `reduction` (r^2 / 6, Pillow's antialiased bilinear) from bilinear's own (1 / 6); (1, 0) for none."""
    if reduction <= BILINEAR_REDUCTION:
        return 1, 0.0
    sigma = math.sqrt((reduction * reduction - 1) / 6)
    return 2 * max(1, round(2 * sigma)) + 1, sigma  # to about 2 sigma: 3 taps up to a 2.1x reduction


def resize(decoded: Decoded, geometry: Geometry) -> Pixels:
    """The surviving region resized to the output size: bilinear, after a blur along each axis
    reduced by more than 1.25x that antialiases it as Pillow's bilinear would."""
    width, height = decoded.source
    scale_y, scale_x = decoded.pixels.shape[0] / height, decoded.pixels.shape[1] / width
    left, top, right, bottom = geometry.source_box(width, height)
    region: np.ndarray = decoded.pixels[
        round(top * scale_y) : round(bottom * scale_y), round(left * scale_x) : round(right * scale_x)
    ]
    out_w, out_h = geometry.output_size(width, height)
    size_x, sigma_x = _antialias_kernel(region.shape[1] / out_w)
    size_y, sigma_y = _antialias_kernel(region.shape[0] / out_h)
    if size_x > 1 or size_y > 1:
        region = cv2.GaussianBlur(region, (size_x, size_y), sigmaX=sigma_x, sigmaY=sigma_y)
    return np.asarray(cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)


def process_image(data: bytes, geometry: Geometry, quality: int) -> Processed:
    """File bytes in, output JPEG and histogram out; `UnreadableImage` when it cannot be decoded."""
    pixels = resize(decode(data, geometry), geometry)
    height, width = pixels.shape[:2]
    jpeg = simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")
    histogram = Image.frombuffer("RGB", (width, height), pixels, "raw", "RGB", 0, 1).histogram()
    return Processed(jpeg=jpeg, histogram=histogram)
