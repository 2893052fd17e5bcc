"""Decoding what real archives hold, and the geometry of the resize."""

from __future__ import annotations

import numpy as np
import pytest

from lth_spark.demo import bad_files
from lth_spark.images import Geometry, UnreadableImage, decode, process_image
from tests.spark.conftest import colored


@pytest.mark.parametrize("kind", ["cmyk", "png", "gray", "palette"])
def test_odd_files_become_rgb(kind: str) -> None:
    source = colored(0, 1, (24, 40))
    pixels = np.asarray(decode(dict(bad_files(source))[kind]).convert("RGB"))
    assert pixels.shape == (24, 40, 3) and pixels.dtype == np.uint8
    if kind != "gray":
        # colors survive (a palette quantizes them a little); CMYK is not inverted
        assert np.abs(pixels.mean(axis=(0, 1)) - source.mean(axis=(0, 1))).max() < 30


def test_exif_rotation_is_applied() -> None:
    assert decode(dict(bad_files(colored(0, 1, (24, 40))))["exif"]).size == (24, 40)  # width, height


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


def test_process_image_output_and_histogram() -> None:
    out = process_image(dict(bad_files(colored(1, 1, (60, 80))))["png"], Geometry(16, "center-crop", 18), 90)
    assert out.jpeg[:2] == b"\xff\xd8"
    assert len(out.histogram) == 768 and sum(out.histogram[256:512]) == 16 * 16
    assert np.argmax(out.histogram[256:512]) > 180  # green channel of a green image
