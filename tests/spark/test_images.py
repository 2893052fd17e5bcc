"""Decoding what real archives hold, the geometry of the resize, and what the scaled decode
keeps of the image (PSNR on real photos)."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
from PIL import Image
from sklearn.datasets import load_sample_image

from lth_spark.demo import bad_files
from lth_spark.images import Geometry, UnreadableImage, decode, process_image, resize
from tests.spark.conftest import colored


@pytest.mark.parametrize("kind", ["cmyk", "png", "gray", "palette"])
def test_odd_files_become_rgb(kind: str) -> None:
    source = colored(0, 1, (24, 40))
    pixels = decode(dict(bad_files(source))[kind]).pixels[..., :3]
    assert pixels.shape == (24, 40, 3) and pixels.dtype == np.uint8
    if kind != "gray":
        # colors survive (a palette quantizes them a little); CMYK is not inverted
        assert np.abs(pixels.mean(axis=(0, 1)) - source.mean(axis=(0, 1))).max() < 30


def test_exif_rotation_is_applied() -> None:
    assert decode(dict(bad_files(colored(0, 1, (24, 40))))["exif"]).source == (
        24,
        40,
    )  # width, height: turned upright


@pytest.mark.parametrize(("kind", "reason"), [("truncated", "runcated"), ("empty", "empty file")])
def test_undecodable_files_say_why(kind: str, reason: str) -> None:
    with pytest.raises(UnreadableImage, match=reason):
        decode(dict(bad_files(colored(0, 1)))[kind])


def test_not_an_image() -> None:
    with pytest.raises(UnreadableImage, match="not an image"):
        decode(b"GIF? no, a text file")


def test_center_crop_resizes_only_the_middle() -> None:
    geometry = Geometry(224, "center-crop", 256)
    # short side 512 -> 256 scales by 1/2, so the 224 crop is the middle 448 x 448 of the source
    assert geometry.source_box(512, 1024) == (32.0, 288.0, 480.0, 736.0)
    assert Geometry(28).source_box(40, 30) == (0.0, 0.0, 40.0, 30.0)


def test_whole_keeps_the_aspect_with_the_short_side_and_caps_the_long_side() -> None:
    whole = Geometry(256, "whole", 256, 512)
    assert whole.output_size(469, 387) == (310, 256)  # ImageNet's average image
    assert whole.output_size(387, 469) == (256, 310)
    assert whole.output_size(128, 100) == (328, 256)  # small images are enlarged to the short side
    assert whole.output_size(3000, 1000) == (512, 171)  # a panorama: the long side at the cap
    assert whole.source_box(469, 387) == (0.0, 0.0, 469.0, 387.0)
    jpeg = simplejpeg.encode_jpeg(colored(0, 2, (387, 469)), quality=90, colorspace="RGB")
    stored = simplejpeg.decode_jpeg(process_image(jpeg, whole, 90).jpeg)
    assert stored.shape == (256, 310, 3)


def test_process_image_output_and_histogram() -> None:
    out = process_image(dict(bad_files(colored(1, 1, (60, 80))))["png"], Geometry(16, "center-crop", 18), 90)
    assert out.jpeg[:2] == b"\xff\xd8"
    assert len(out.histogram) == 768 and sum(out.histogram[256:512]) == 16 * 16
    assert np.argmax(out.histogram[256:512]) > 180  # green channel of a green image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a[..., :3].astype(np.float64) - b[..., :3].astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))


SCALED_DECODE_FLOOR_DB = 30.0
SCALED_DECODE_MEAN_DB = 38.0
"""The stated tolerance of the scaled decode: every output within 30 dB PSNR of the full-decode
path's (JPEG at q90 itself costs these photos about 38 dB), and 38 dB on average."""


def test_scaled_decode_keeps_the_output_within_the_stated_psnr_of_a_full_decode() -> None:
    """Two real photos (scikit-learn's), at sizes where a 1/2 or 1/4 DCT scale covers the output
    and where none does, in every geometry: the output from the scaled decode against the same
    resize of the full-size decode, and both against Pillow's antialiased bilinear (the resize
    before this change)."""
    scaled_vs_full, against_pillow, reduced = [], [], 0
    for name in ("china.jpg", "flower.jpg"):
        photo = Image.fromarray(load_sample_image(name))
        for size in ((469, 387), (700, 520), (1024, 768), (2000, 1000)):
            pixels = np.asarray(photo.resize(size, Image.Resampling.LANCZOS))
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=90, colorsubsampling="420")
            full = decode(jpeg)
            pillow = Image.frombuffer("RGB", full.source, full.pixels, "raw", "RGB", 0, 1)
            for geometry in (
                Geometry(224, "center-crop", 256),
                Geometry(256, "whole", 256, 512),
                Geometry(227),
            ):
                scaled = decode(jpeg, geometry)
                reduced += scaled.pixels.shape[1] < size[0]
                out = resize(scaled, geometry)
                scaled_vs_full.append(_psnr(out, resize(full, geometry)))
                old = pillow.resize(
                    geometry.output_size(*size), Image.Resampling.BILINEAR, box=geometry.source_box(*size)
                )
                against_pillow.append(_psnr(out, np.asarray(old)))
    assert reduced >= 12  # the scaled decode did apply, at 1/2 or 1/4
    assert min(scaled_vs_full) >= SCALED_DECODE_FLOOR_DB, scaled_vs_full
    assert np.mean([min(p, 60.0) for p in scaled_vs_full]) >= SCALED_DECODE_MEAN_DB, scaled_vs_full
    assert min(against_pillow) >= SCALED_DECODE_FLOOR_DB, against_pillow
    assert np.mean(against_pillow) >= SCALED_DECODE_MEAN_DB, against_pillow
