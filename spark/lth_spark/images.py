"""One image: decode whatever the file really is, resize as the spec says, encode JPEG.

Pure functions of bytes, so the Spark tasks and the benchmark's plain pool run the
very same code. simplejpeg (libjpeg-turbo) decodes ordinary JPEGs; everything it
refuses (CMYK, PNG named .JPEG, palette, EXIF-rotated, recoverable corruption)
goes through Pillow, and what Pillow cannot read either is an `UnreadableImage`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

Pixels = NDArray[np.uint8]

_EXIF_ORIENTATION = 0x0112
_EXIF_SEARCH_BYTES = 65536
"""The APP1 (EXIF) segment, when present, sits in the first 64 KiB."""


class UnreadableImage(Exception):
    """The file is not an image that can be decoded; the message is the reason the manifest lists."""


@dataclass(frozen=True)
class Geometry:
    """What the spec asks for: a side x side square, squashed or short-side resized and center-cropped."""

    image_size: int
    resize: Literal["squash", "center-crop"] = "squash"
    short_side: int = 0

    def source_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the source that survives the crop, so only it is resized."""
        if self.resize == "squash":
            return (0.0, 0.0, float(width), float(height))
        scale = self.short_side / min(width, height)
        crop_w = min(float(width), self.image_size / scale)
        crop_h = min(float(height), self.image_size / scale)
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        return (left, top, left + crop_w, top + crop_h)


@dataclass(frozen=True)
class Processed:
    """An output image and its per-channel histogram (R, G, B x 256 counts): the manifest's mean and std."""

    jpeg: bytes
    histogram: list[int]


def _exif_rotated(data: bytes) -> bool:
    if data.find(b"Exif\x00\x00", 0, _EXIF_SEARCH_BYTES) < 0:
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(_EXIF_ORIENTATION, 1)) != 1
    except Exception:  # a broken EXIF block: the decoders below judge the file
        return False


def decode(data: bytes) -> Image.Image:
    """Any image file as an upright RGBX image (RGB padded to 4 bytes, Pillow's own layout: no copies)."""
    if not data:
        raise UnreadableImage("empty file")
    if data[:2] == b"\xff\xd8" and not _exif_rotated(data):
        try:
            pixels: Pixels = simplejpeg.decode_jpeg(data, colorspace="RGBX")
        except ValueError:
            pass  # CMYK, or a recoverable error that Pillow tolerates: decided below
        else:
            height, width = pixels.shape[:2]
            return Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return ImageOps.exif_transpose(img).convert("RGB").convert("RGBX")
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can identify") from None
    except Exception as error:  # any file at all arrives here; one must not fail the whole task
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None


def resize(image: Image.Image, geometry: Geometry) -> Image.Image:
    """Bilinear (antialiased) resize of the surviving region to image_size x image_size."""
    side = geometry.image_size
    return image.resize((side, side), Image.Resampling.BILINEAR, box=geometry.source_box(*image.size))


def process_image(data: bytes, geometry: Geometry, quality: int) -> Processed:
    """File bytes in, output JPEG and histogram out; `UnreadableImage` when it cannot be decoded."""
    image = resize(decode(data), geometry)
    jpeg = simplejpeg.encode_jpeg(
        np.asarray(image), quality=quality, colorspace="RGBX", colorsubsampling="420"
    )
    return Processed(jpeg=jpeg, histogram=image.histogram()[:768])  # the X band's counts dropped
