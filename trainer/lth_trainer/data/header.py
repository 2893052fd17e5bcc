"""A shard image measured by its JPEG header before it is decoded: shards of `prepared` data may
come from anywhere, and a 1 KB file whose header declares 30000 x 30000 would make the decoder
allocate gigabytes in every loader worker."""

from __future__ import annotations

from collections.abc import Callable

import simplejpeg

from lth_trainer.store import TrainerError


def checked_size(data: bytes, max_pixels: int, where: Callable[[], str]) -> tuple[int, int]:
    """(height, width) from the header; a TrainerError naming `where()` (called only then: the
    loader reads every image's header) when it is no JPEG or declares more than `max_pixels`
    (spec.dataset.maxImagePixels)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise TrainerError(f"{where()}: not a JPEG image ({error})") from None
    if height * width > max_pixels:
        raise TrainerError(
            f"{where()}: a {height}x{width} image, more than spec.dataset.maxImagePixels ({max_pixels})"
        )
    return int(height), int(width)
